package server_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// smallDisk mounts a size-limited tmpfs for the store. make test sets
// CUSTODY_TEST_REQUIRE_MOUNT=1: there, no mount is a failure, not a skip.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := "cannot mount a size-limited tmpfs (needs root or CAP_SYS_ADMIN): " + strings.TrimSpace(string(out))
		if os.Getenv("CUSTODY_TEST_REQUIRE_MOUNT") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// visible lists the files under dir that an upload may leave: objects,
// temporary files, bindings and partials.
func visible(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"blobs/objects/data", "blobs/tmp", "bindings", "partial"} {
		filepath.WalkDir(filepath.Join(dir, sub), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				out = append(out, strings.TrimPrefix(p, dir+"/"))
			}
			return nil
		})
	}
	return out
}

// TestDiskFullDuringUpload: an upload that fills the disk fails with
// ResourceExhausted naming the disk, leaves nothing partial, and the store
// works again once space returns.
func TestDiskFullDuringUpload(t *testing.T) {
	dir := smallDisk(t, "8m")
	f := startFull(t, nil, nil, dir)
	c := f.client(t, "/builder/ci")
	first := make([]byte, 1<<20)
	rand.Read(first)
	if _, err := upload(t.Context(), c, header("1.0.0", 0), bytes.NewReader(first), 64<<10); err != nil {
		t.Fatal(err)
	}
	before := visible(t, dir)
	// Leave about 3 MiB free.
	filler := filepath.Join(dir, "filler")
	fill := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M", "count=4")
	if out, err := fill.CombinedOutput(); err != nil {
		t.Fatalf("fill the disk: %v %s", err, out)
	}
	big := make([]byte, 6<<20)
	rand.Read(big)
	for _, tc := range []struct{ name, id string }{{"plain", ""}, {"resumable", "disk-full-upload-01"}} {
		h := header("2.0.0-"+tc.name, int64(len(big)))
		h.UploadId = tc.id
		_, err := upload(t.Context(), c, h, bytes.NewReader(big), 64<<10)
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "disk is full") || !strings.Contains(err.Error(), dir) {
			t.Fatalf("%s upload onto a full disk: %v, want ResourceExhausted naming the disk", tc.name, err)
		}
		if got := visible(t, dir); strings.Join(got, " ") != strings.Join(before, " ") {
			t.Fatalf("%s upload onto a full disk left %v (before: %v)", tc.name, got, before)
		}
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	resp, err := upload(t.Context(), c, header("2.0.0-plain", int64(len(big))), bytes.NewReader(big), 64<<10)
	if err != nil {
		t.Fatalf("upload once space returned: %v", err)
	}
	got, err := download(t, f.client(t, "/edge/dev"), resp.GetDigest())
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("download after the disk was full: %v", err)
	}
}
