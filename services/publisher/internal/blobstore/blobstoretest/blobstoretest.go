// Package blobstoretest is the conformance suite every blob-store back end
// runs against the real storage it talks to.
package blobstoretest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/custody-dev/custody/services/publisher/internal/blobstore"
)

// Run checks the blobstore.Backend contract. newBackend returns an empty
// back end; it is called once per subtest.
func Run(t *testing.T, newBackend func(t *testing.T) blobstore.Backend) {
	t.Run("WriteThenOpenAtEveryOffset", func(t *testing.T) {
		b := newBackend(t)
		for _, size := range []int{0, 1, 4096, 17<<20 + 5} { // the last spans several S3 parts
			data := random(t, size)
			name := fmt.Sprintf("data/w-%d", size)
			n, err := b.Write(t.Context(), name, bytes.NewReader(data))
			if err != nil || n != int64(size) {
				t.Fatalf("Write %d bytes = %d, %v", size, n, err)
			}
			for _, off := range []int64{0, 1, int64(size) / 2, int64(size) - 1, int64(size)} {
				if off < 0 || off > int64(size) {
					continue
				}
				r, total, err := b.Open(t.Context(), name, off)
				if err != nil {
					t.Fatalf("Open(%d) of %d bytes: %v", off, size, err)
				}
				got, err := io.ReadAll(r)
				r.Close()
				if err != nil || total != int64(size) || !bytes.Equal(got, data[off:]) {
					t.Fatalf("Open(%d) of %d bytes: read %d bytes, size %d, %v", off, size, len(got), total, err)
				}
			}
		}
	})
	t.Run("OpenPastEndIsInvalid", func(t *testing.T) {
		b := newBackend(t)
		mustWrite(t, b, "data/x", []byte("abc"))
		for _, off := range []int64{4, 1 << 40, -1} {
			if _, _, err := b.Open(t.Context(), "data/x", off); !errors.Is(err, blobstore.ErrInvalid) {
				t.Errorf("Open(offset %d) of 3 bytes: %v, want ErrInvalid", off, err)
			}
		}
	})
	t.Run("MissingIsNotFound", func(t *testing.T) {
		b := newBackend(t)
		if _, _, err := b.Open(t.Context(), "data/none", 0); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("Open: %v, want ErrNotFound", err)
		}
		if _, err := b.Get(t.Context(), "keys/none"); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("Get: %v, want ErrNotFound", err)
		}
		if err := b.Delete(t.Context(), "data/none"); err != nil {
			t.Errorf("Delete of a missing object: %v", err)
		}
	})
	t.Run("FailedWriteLeavesNothing", func(t *testing.T) {
		b := newBackend(t)
		r := io.MultiReader(bytes.NewReader(random(t, 12<<20)), iotest.ErrReader(errors.New("client went away")))
		if _, err := b.Write(t.Context(), "data/half", r); err == nil {
			t.Fatal("Write with a failing reader succeeded")
		}
		if _, _, err := b.Open(t.Context(), "data/half", 0); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("after a failed Write, Open: %v, want ErrNotFound", err)
		}
		if names := list(t, b, "data/"); len(names) != 0 {
			t.Errorf("after a failed Write, List = %v, want nothing", names)
		}
	})
	t.Run("WriteTwiceIsExists", func(t *testing.T) {
		b := newBackend(t)
		mustWrite(t, b, "data/once", []byte("first"))
		if _, err := b.Write(t.Context(), "data/once", bytes.NewReader([]byte("second"))); !errors.Is(err, blobstore.ErrExists) {
			t.Errorf("second Write: %v, want ErrExists", err)
		}
		if got := read(t, b, "data/once"); string(got) != "first" {
			t.Errorf("after a refused Write the object is %q, want %q", got, "first")
		}
	})
	t.Run("CreateIsPutIfAbsentUnderRace", func(t *testing.T) {
		b := newBackend(t)
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { errs[i] = b.Create(t.Context(), "keys/race", []byte{byte(i)}) })
		}
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won >= 0:
				t.Fatalf("Create succeeded twice (%d and %d)", won, i)
			case err == nil:
				won = i
			case !errors.Is(err, blobstore.ErrExists):
				t.Fatalf("Create %d: %v, want nil or ErrExists", i, err)
			}
		}
		if won < 0 {
			t.Fatal("no Create succeeded")
		}
		got, err := b.Get(t.Context(), "keys/race")
		if err != nil || !bytes.Equal(got, []byte{byte(won)}) {
			t.Errorf("Get = %v, %v; want the winner's byte %d", got, err, won)
		}
	})
	t.Run("ReplaceOverwrites", func(t *testing.T) {
		b := newBackend(t)
		if err := b.Create(t.Context(), "keys/r", []byte("v1")); err != nil {
			t.Fatal(err)
		}
		if err := b.Replace(t.Context(), "keys/r", []byte("v2")); err != nil {
			t.Fatal(err)
		}
		if got, err := b.Get(t.Context(), "keys/r"); err != nil || string(got) != "v2" {
			t.Errorf("Get after Replace = %q, %v; want v2", got, err)
		}
	})
	t.Run("ListAndDelete", func(t *testing.T) {
		b := newBackend(t)
		for _, n := range []string{"keys/a/1", "keys/a/2", "keys/b/3", "data/4"} {
			if err := b.Create(t.Context(), n, []byte(n)); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := list(t, b, "keys/"), []string{"keys/a/1", "keys/a/2", "keys/b/3"}; !slices.Equal(got, want) {
			t.Errorf("List(keys/) = %v, want %v", got, want)
		}
		if err := b.Delete(t.Context(), "keys/a/1"); err != nil {
			t.Fatal(err)
		}
		if got, want := list(t, b, "keys/a/"), []string{"keys/a/2"}; !slices.Equal(got, want) {
			t.Errorf("after Delete, List(keys/a/) = %v, want %v", got, want)
		}
	})
	t.Run("HostileNamesRefused", func(t *testing.T) {
		b := newBackend(t)
		for _, name := range []string{"", "../escape", "a/../../b", "/abs", "a//b", "UPPER", "a/./b", "a\\b", "a\x00b", "keys/"} {
			if _, err := b.Write(t.Context(), name, bytes.NewReader(nil)); !errors.Is(err, blobstore.ErrInvalid) {
				t.Errorf("Write(%q): %v, want ErrInvalid", name, err)
			}
			if err := b.Create(t.Context(), name, nil); !errors.Is(err, blobstore.ErrInvalid) {
				t.Errorf("Create(%q): %v, want ErrInvalid", name, err)
			}
			if _, _, err := b.Open(t.Context(), name, 0); !errors.Is(err, blobstore.ErrInvalid) {
				t.Errorf("Open(%q): %v, want ErrInvalid", name, err)
			}
		}
		if err := b.List(t.Context(), "../", func(string) error { return nil }); !errors.Is(err, blobstore.ErrInvalid) {
			t.Errorf("List(../): %v, want ErrInvalid", err)
		}
	})
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func mustWrite(t *testing.T, b blobstore.Backend, name string, data []byte) {
	t.Helper()
	if _, err := b.Write(t.Context(), name, bytes.NewReader(data)); err != nil {
		t.Fatalf("Write %s: %v", name, err)
	}
}

func read(t *testing.T, b blobstore.Backend, name string) []byte {
	t.Helper()
	r, _, err := b.Open(t.Context(), name, 0)
	if err != nil {
		t.Fatalf("Open %s: %v", name, err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return got
}

func list(t *testing.T, b blobstore.Backend, prefix string) []string {
	t.Helper()
	var names []string
	if err := b.List(t.Context(), prefix, func(n string) error { names = append(names, n); return nil }); err != nil {
		t.Fatalf("List(%s): %v", prefix, err)
	}
	slices.Sort(names)
	return names
}
