package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custody-dev/custody/services/publisher/internal/blobstore/local"
	"github.com/custody-dev/custody/services/publisher/internal/kek/soft"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

func TestVerifyBlobs(t *testing.T) {
	dir := t.TempDir()
	kekFile := filepath.Join(t.TempDir(), "kek.json")
	objects, err := local.New(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := soft.Open(kekFile)
	if err != nil {
		t.Fatal(err)
	}
	store := sealed.New(objects, k, slog.New(slog.DiscardHandler))
	var digests []string
	for _, content := range []string{"first blob", strings.Repeat("second", 100000)} {
		d, _, err := store.Put(t.Context(), strings.NewReader(content), 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	args := []string{"--data-dir", dir, "--kek", "soft", "--soft-kek-file", kekFile}
	noenv := func(string) string { return "" }
	var out bytes.Buffer
	if err := verifyBlobs(t.Context(), args, noenv, &out); err != nil {
		t.Fatalf("clean store: %v\n%s", err, &out)
	}
	if n := strings.Count(out.String(), `"ok":true`); n != 2 {
		t.Fatalf("clean store: %d blobs ok, want 2:\n%s", n, &out)
	}

	// One bit of one ciphertext: that blob, and only it, is named.
	var data []string
	filepath.WalkDir(filepath.Join(dir, "blobs", "objects", "data"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			data = append(data, p)
		}
		return nil
	})
	if len(data) != 2 {
		t.Fatalf("%d ciphertext objects, want 2", len(data))
	}
	b, _ := os.ReadFile(data[0])
	b[len(b)/2] ^= 1
	os.WriteFile(data[0], b, 0o600)
	out.Reset()
	if err := verifyBlobs(t.Context(), args, noenv, &out); err == nil || !strings.Contains(err.Error(), "1 blobs do not verify") {
		t.Fatalf("tampered store: %v", err)
	}
	bad := 0
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r blobResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if !r.OK {
			bad++
			if r.Unavailable || !strings.Contains(r.Problem, "corrupted") || !strings.HasSuffix(r.Record, strings.TrimPrefix(r.Digest, "sha256:")) {
				t.Errorf("tampered blob reported as %+v", r)
			}
		}
	}
	if bad != 1 {
		t.Errorf("%d blobs named, want 1:\n%s", bad, &out)
	}

	// Another KEK opens nothing; an S3 store or no data dir is refused.
	out.Reset()
	other := append(args[:len(args)-1:len(args)-1], filepath.Join(t.TempDir(), "other.json"))
	if err := verifyBlobs(t.Context(), other, noenv, &out); err == nil || strings.Count(out.String(), `"ok":false`) != 2 {
		t.Errorf("another KEK: %v\n%s", err, &out)
	}
	if err := verifyBlobs(t.Context(), append(args, "--blob-store", "s3"), noenv, &out); err == nil {
		t.Error("an S3 store was accepted")
	}
	if err := verifyBlobs(t.Context(), args[2:], noenv, &out); err == nil {
		t.Error("no --data-dir was accepted")
	}
}
