package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The publisher's KEK in the signer's HSM (custody dev up --hsm): blobs are
// wrapped in the token, the custodian rotates the KEK, rewraps and destroys
// the old version, and the artifact still comes back byte-identical;
// nobody else may rotate.
func TestHSMKEKRotation(t *testing.T) {
	s := start(t, "--hsm")
	work := t.TempDir()
	src := randomFile(t, work, "app", 3<<20)
	d := digestOf(s.mustCustody("publish", src, "--name", "app", "--version", "1.0.0", "--channel", "staging"))
	if d == "" {
		t.Fatal("publish printed no digest")
	}
	record := func() string {
		t.Helper()
		h := strings.TrimPrefix(d, "sha256:")
		b, err := os.ReadFile(filepath.Join(s.dir, "data", "publisher", "blobs", "objects", "keys", "sha256", h[:2], h))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if r := record(); !strings.Contains(r, `"wrapped":"signer:publisher:v1:`) {
		t.Fatalf("key record not wrapped by the HSM KEK version 1:\n%s", r)
	}
	if out, code := s.custody("store", "kek", "rotate", "--as", "builder"); code == 0 || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("builder rotated the KEK: exit %d\n%s", code, out)
	}
	if out := s.mustCustody("store", "kek", "rotate", "--json"); !strings.Contains(out, `"version":2`) {
		t.Fatalf("rotate:\n%s", out)
	}
	if out := s.mustCustody("store", "rewrap"); !strings.Contains(out, "rewrapped 1 data keys, 0 failed") {
		t.Fatalf("rewrap:\n%s", out)
	}
	if r := record(); !strings.Contains(r, `"wrapped":"signer:publisher:v2:`) {
		t.Fatalf("key record not rewrapped to version 2:\n%s", r)
	}
	if out, code := s.custody("store", "kek", "destroy", "--version", "2"); code == 0 || !strings.Contains(out, "newest") {
		t.Fatalf("destroyed the newest KEK version: exit %d\n%s", code, out)
	}
	s.mustCustody("store", "kek", "destroy", "--version", "1")
	dst := filepath.Join(work, "fetched")
	s.mustCustody("fetch", "app@1.0.0", "--env", "staging", "-o", dst, "--bundle", dst+".bundle")
	sameFile(t, src, dst)
}
