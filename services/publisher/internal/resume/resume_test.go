package resume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/custody-dev/custody/services/publisher/internal/kek"
	"github.com/custody-dev/custody/services/publisher/internal/kek/soft"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func open(t *testing.T, dir string, c *clock) *Store {
	t.Helper()
	k, err := soft.Open(filepath.Join(filepath.Dir(dir), "kek-"+filepath.Base(dir)+".json"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Config{Dir: dir, TTL: time.Hour, MaxPerCaller: 2, KEK: k, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func write(t *testing.T, s *Store, caller, id string, off int64, data []byte) *Upload {
	t.Helper()
	u, err := s.Begin(t.Context(), caller, id, off, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write(data); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestResumeAcrossRestartRebuildsHash(t *testing.T) {
	dir, c := t.TempDir(), &clock{now: time.Now()}
	data := bytes.Repeat([]byte("0123456789"), 100000)
	write(t, open(t, dir, c), "spiffe://td/builder/a", "upload-id-0000001", 0, data[:500000]).Suspend()
	s := open(t, dir, c) // a restart: only the file remains
	if n, err := s.Status("spiffe://td/builder/a", "upload-id-0000001"); err != nil || n != 500000 {
		t.Fatalf("status after restart: %d %v", n, err)
	}
	u := write(t, s, "spiffe://td/builder/a", "upload-id-0000001", 400000, data[400000:])
	sum := sha256.Sum256(data)
	if u.Digest() != "sha256:"+hex.EncodeToString(sum[:]) || u.Size() != int64(len(data)) {
		t.Fatalf("resumed digest %s size %d", u.Digest(), u.Size())
	}
	got, _ := io.ReadAll(u.Bytes())
	if !bytes.Equal(got, data) {
		t.Fatal("resumed bytes differ")
	}
	u.Discard()
	if _, err := s.Status("spiffe://td/builder/a", "upload-id-0000001"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after discard: %v", err)
	}
}

func TestExpiryAndSweep(t *testing.T) {
	dir, c := t.TempDir(), &clock{now: time.Now()}
	s := open(t, dir, c)
	write(t, s, "a", "upload-id-0000001", 0, []byte("abc")).Suspend()
	c.add(59 * time.Minute)
	if n := s.Sweep(); n != 0 {
		t.Fatalf("swept %d before the TTL", n)
	}
	c.add(2 * time.Minute)
	if _, err := s.Status("a", "upload-id-0000001"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired upload: %v", err)
	}
	if _, err := s.Begin(t.Context(), "a", "upload-id-0000001", 3, true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("resume of an expired upload: %v", err)
	}
	write(t, s, "a", "upload-id-0000002", 0, []byte("abc")).Suspend()
	c.add(2 * time.Hour)
	if n := s.Sweep(); n != 1 {
		t.Fatalf("swept %d, want 1", n)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("%d files left", len(entries))
	}
}

func TestEvictionPerCaller(t *testing.T) {
	dir, c := t.TempDir(), &clock{now: time.Now()}
	s := open(t, dir, c)
	for i := range 5 {
		u := write(t, s, "greedy", fmt.Sprintf("upload-id-%07d", i), 0, []byte("x"))
		u.Suspend()
		os.Chtimes(s.path(name("greedy", fmt.Sprintf("upload-id-%07d", i))), time.Time{}, c.Now().Add(time.Duration(i)*time.Second))
	}
	write(t, s, "other", "upload-id-0000000", 0, []byte("y")).Suspend()
	for i := range 5 {
		_, err := s.Status("greedy", fmt.Sprintf("upload-id-%07d", i))
		if kept := err == nil; kept != (i >= 3) {
			t.Errorf("greedy upload %d: kept %v, want only the newest 2", i, kept)
		}
	}
	if _, err := s.Status("other", "upload-id-0000000"); err != nil {
		t.Errorf("another caller's upload was evicted: %v", err)
	}
}

func TestBeginValidates(t *testing.T) {
	s := open(t, t.TempDir(), &clock{now: time.Now()})
	for _, tt := range []struct {
		id  string
		off int64
	}{{"short", 0}, {"../../../../etc/x-y", 0}, {"upload-id-0000001", -1}} {
		if _, err := s.Begin(t.Context(), "a", tt.id, tt.off, true); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q at %d: %v, want ErrInvalid", tt.id, tt.off, err)
		}
	}
	write(t, s, "a", "upload-id-0000001", 0, []byte("abc")).Suspend()
	if _, err := s.Begin(t.Context(), "a", "upload-id-0000001", 4, true); !errors.Is(err, ErrInvalid) {
		t.Errorf("offset beyond held: %v", err)
	}
}

// FuzzValidID: an id the publisher accepts from a client never carries a
// path element, and maps to one file name inside the directory.
func FuzzValidID(f *testing.F) {
	for _, s := range []string{"upload-id-0000001", "../../etc/passwd", "", "a/b/c/d/e/f/g/h/i"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if !ValidID(id) {
			return
		}
		for _, c := range id {
			if c == '/' || c == '.' || c == 0 || c > 127 {
				t.Fatalf("accepted %q", id)
			}
		}
		if n := name("c", id); len(n) != 16+1+64 {
			t.Fatalf("file name %q", n)
		}
	})
}

// downKEK is a KEK back end that cannot be reached.
type downKEK struct{}

func (downKEK) Wrap(context.Context, []byte) (string, error) {
	return "", fmt.Errorf("%w: sealed", kek.ErrUnavailable)
}
func (downKEK) Unwrap(context.Context, string) ([]byte, error) {
	return nil, fmt.Errorf("%w: sealed", kek.ErrUnavailable)
}

func TestPartialFilesAreSealed(t *testing.T) {
	dir, c := t.TempDir(), &clock{now: time.Now()}
	s := open(t, dir, c)
	const a, b = "upload-id-aaaaaaa1", "upload-id-bbbbbbb2"
	caller := "spiffe://td/builder/a"
	data := bytes.Repeat([]byte("secret plaintext "), 20000) // several records
	write(t, s, caller, a, 0, data).Suspend()
	write(t, s, caller, b, 0, data[:len(data)/2]).Suspend()
	pa, pb := filepath.Join(dir, name(caller, a)), filepath.Join(dir, name(caller, b))
	raw, err := os.ReadFile(pa)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("secret plaintext")) {
		t.Fatal("partial file holds plaintext")
	}
	if n, err := s.Status(caller, a); err != nil || n != int64(len(data)) {
		t.Fatalf("status %d %v", n, err)
	}

	// A flipped byte in a record: the resume keeps only what
	// authenticates and says where to resume from.
	flipped := bytes.Clone(raw)
	flipped[len(flipped)-fullRecord] ^= 1
	if err := os.WriteFile(pa, flipped, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(t.Context(), caller, a, int64(len(data)), true); !errors.Is(err, ErrInvalid) {
		t.Fatalf("resume over a tampered record: %v, want ErrInvalid", err)
	}
	if n, err := s.Status(caller, a); err != nil || n >= int64(len(data)) || n%partChunk != 0 {
		t.Fatalf("status after a tampered record: %d %v, want the authentic whole records", n, err)
	}

	// Another upload's file put in this one's place (same caller, same
	// key back end) does not authenticate: records are bound to their file.
	other, _ := os.ReadFile(pb)
	if err := os.WriteFile(pa, other, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(t.Context(), caller, a, partChunk, true); !errors.Is(err, ErrInvalid) {
		t.Fatalf("resume from a swapped file: %v, want ErrInvalid", err)
	}

	// A garbage header: the partial is dropped, upload from 0.
	if err := os.WriteFile(pb, []byte("not a partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(t.Context(), caller, b, 10, true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("resume of a damaged file: %v, want ErrNotFound", err)
	}

	// The KEK down: nothing starts, nothing resumes; the file is kept.
	down, err := Open(Config{Dir: dir, TTL: time.Hour, MaxPerCaller: 2, KEK: downKEK{}, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := down.Begin(t.Context(), caller, "upload-id-ccccccc3", 0, true); !errors.Is(err, sealed.ErrUnavailable) {
		t.Fatalf("start with the KEK down: %v", err)
	}
	write(t, s, caller, a, 0, data).Suspend()
	if _, err := down.Begin(t.Context(), caller, a, 100, true); !errors.Is(err, sealed.ErrUnavailable) {
		t.Fatalf("resume with the KEK down: %v", err)
	}
	if n, err := s.Status(caller, a); err != nil || n != int64(len(data)) {
		t.Fatalf("status after the KEK was down: %d %v", n, err)
	}
	if _, err := Open(Config{Dir: dir, TTL: time.Hour, MaxPerCaller: 2}); err == nil {
		t.Fatal("Open without a KEK succeeded")
	}
}

// FuzzPartialFile: whatever bytes are on disk as a partial upload, Status
// and a resume return an error or a consistent result, never panic.
func FuzzPartialFile(f *testing.F) {
	dir := f.TempDir()
	c := &clock{now: time.Now()}
	k, err := soft.Open(filepath.Join(f.TempDir(), "kek.json"))
	if err != nil {
		f.Fatal(err)
	}
	s, err := Open(Config{Dir: dir, TTL: time.Hour, MaxPerCaller: 2, KEK: k, Now: c.Now})
	if err != nil {
		f.Fatal(err)
	}
	const caller, id = "spiffe://td/builder/f", "fuzz-upload-00001"
	u, err := s.Begin(f.Context(), caller, id, 0, true)
	if err != nil {
		f.Fatal(err)
	}
	u.Write(bytes.Repeat([]byte{7}, partChunk+100))
	u.Suspend()
	seed, _ := os.ReadFile(filepath.Join(dir, name(caller, id)))
	f.Add(seed, int64(50))
	f.Add([]byte(partMagic+"\x00\x05hello"), int64(1))
	f.Fuzz(func(t *testing.T, b []byte, off int64) {
		if err := os.WriteFile(filepath.Join(dir, name(caller, id)), b, 0o600); err != nil {
			t.Fatal(err)
		}
		n, serr := s.Status(caller, id)
		if serr == nil && n < 0 {
			t.Fatalf("status %d", n)
		}
		u, err := s.Begin(t.Context(), caller, id, off, true)
		if err != nil {
			return
		}
		if u.Size() != off {
			t.Fatalf("resumed at %d with %d bytes", off, u.Size())
		}
		u.Discard()
	})
}
