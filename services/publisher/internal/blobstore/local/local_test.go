package local

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

func TestPutOpenRoundTripAndIdempotence(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("custody"), 300000)
	d1, n, err := s.Put(bytes.NewReader(data), 1<<30)
	if err != nil || n != int64(len(data)) {
		t.Fatal(n, err)
	}
	d2, _, err := s.Put(bytes.NewReader(data), 1<<30)
	if err != nil || d2 != d1 {
		t.Fatalf("same content again: %s %v", d2, err)
	}
	r, size, err := s.Open(t.Context(), d1, 0)
	if err != nil || size != int64(len(data)) {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	if _, err := s.Verify(d1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Open(t.Context(), "sha256:"+strings.Repeat("0", 64), 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing blob: %v", err)
	}
	if _, _, err := s.Open(t.Context(), "sha256:XYZ", 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad digest: %v", err)
	}
	for _, off := range []int64{-1, int64(len(data)) + 1} {
		if _, _, err := s.Open(t.Context(), d1, off); !errors.Is(err, ErrInvalid) {
			t.Errorf("offset %d: %v, want ErrInvalid", off, err)
		}
	}
	for _, off := range []int64{1, 7777, int64(len(data))} {
		r, size, err := s.Open(t.Context(), d1, off)
		if err != nil || size != int64(len(data)) {
			t.Fatalf("offset %d: size %d, %v", off, size, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data[off:]) {
			t.Fatalf("offset %d: read %d bytes, %v", off, len(got), err)
		}
	}
}

func TestFailedWriteLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir)
	failing := io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(errors.New("client went away")))
	if _, _, err := s.Put(failing, 1<<20); err == nil {
		t.Fatal("want an error")
	}
	if _, _, err := s.Put(strings.NewReader(strings.Repeat("x", 100)), 10); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize: %v", err)
	}
	var files []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, _ error) error {
		if !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Fatalf("files left behind: %v", files)
	}
}

func corrupt(t *testing.T, s *Store, digest string, f func(path string)) {
	h, _ := ParseDigest(digest)
	f(s.path(h))
}

func TestIntegrityFailures(t *testing.T) {
	s, _ := Open(t.TempDir())
	data := bytes.Repeat([]byte{7}, 4096)
	for name, damage := range map[string]func(path string){
		"flipped byte": func(p string) {
			b, _ := os.ReadFile(p)
			b[100] ^= 1
			os.WriteFile(p, b, 0o600)
		},
		"extended": func(p string) {
			f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte("more"))
			f.Close()
		},
	} {
		d, _, err := s.Put(bytes.NewReader(data), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Verify(d); err != nil {
			t.Fatal(err)
		}
		corrupt(t, s, d, damage)
		r, _, err := s.Open(t.Context(), d, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(r)
		r.Close()
		if !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), d) {
			t.Errorf("%s: read: %v, want ErrIntegrity naming %s", name, err, d)
		}
		// Verify's cache must notice the rewrite.
		if _, err := s.Verify(d); !errors.Is(err, ErrIntegrity) {
			t.Errorf("%s: Verify after damage: %v, want ErrIntegrity", name, err)
		}
		h, _ := ParseDigest(d)
		os.Remove(s.path(h))
		data = append(data, 1)
	}
}
