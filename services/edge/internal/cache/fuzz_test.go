package cache_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/custody-dev/custody/libs/stream"
	"github.com/custody-dev/custody/services/edge/internal/cache"
)

// FuzzOpen: cache files are read back from a disk someone else may write.
// Whatever a file holds, a read releases only a prefix of the true blob,
// and an error is an integrity failure.
func FuzzOpen(f *testing.F) {
	key := bytes.Repeat([]byte{9}, 32)
	o := &memOrigin{}
	blob := bytes.Repeat([]byte("edge cache "), stream.MinChunk/5)
	d, hx := o.add(blob)
	seedDir := f.TempDir()
	c, _ := open(f, cache.Config{Dir: seedDir, Origin: o, Key: key, Chunk: stream.MinChunk})
	if _, _, err := readAll(f, c, d, hx); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(filepath.Join(seedDir, "sha256-"+hx))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:100])
	f.Add(append(bytes.Clone(good), 0))
	f.Add([]byte("custody edge cache v1\n"))
	dir := f.TempDir()
	c, _ = open(f, cache.Config{Dir: dir, Origin: o, Key: key, Chunk: stream.MinChunk})
	path := filepath.Join(dir, "sha256-"+hx)
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		got, _, err := readAll(t, c, d, hx)
		if err != nil && !errors.Is(err, cache.ErrIntegrity) {
			t.Fatalf("read: %v, want success or ErrIntegrity", err)
		}
		if !bytes.HasPrefix(blob, got) || (err == nil && len(got) != len(blob)) {
			t.Fatalf("released %d bytes that are not the blob's (err %v)", len(got), err)
		}
	})
}
