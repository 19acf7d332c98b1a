package resume

import (
	"bytes"
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

	"github.com/custody-dev/custody/services/publisher/internal/kek/soft"
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
