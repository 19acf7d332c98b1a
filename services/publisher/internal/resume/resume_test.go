package resume

import (
	"bytes"
	"context"
	"crypto/rand"
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

	"github.com/custody-dev/custody/libs/stream"
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
	u, err := s.Begin(t.Context(), caller, id, off)
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
	if got := finished(t, u); !bytes.Equal(got, data) {
		t.Fatal("resumed bytes differ")
	}
	u.Discard()
	if _, err := s.Status("spiffe://td/builder/a", "upload-id-0000001"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after discard: %v", err)
	}
}

// finished seals the upload's last chunk and reads its file back as the
// blob store will: the bytes in the store's format under the data key.
func finished(t *testing.T, u *Upload) []byte {
	t.Helper()
	b, err := u.Finish()
	if err != nil {
		t.Fatal(err)
	}
	c, err := sealed.ContentCipher(b.DataKey, b.Chunk)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(b.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, _ := f.Stat(); fi.Size() != stream.SealedSize(b.Size, b.Chunk) {
		t.Fatalf("sealed file of %d bytes, want %d", fi.Size(), stream.SealedSize(b.Size, b.Chunk))
	}
	got, err := io.ReadAll(c.Reader(f, b.Size, 0))
	if err != nil {
		t.Fatalf("read the sealed upload: %v", err)
	}
	sum := sha256.Sum256(got)
	if b.Digest != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Fatalf("sealed upload's digest %s, its bytes hash otherwise", b.Digest)
	}
	return got
}

// TestResumeEveryWay: cut anywhere, resumed from where it was cut or from
// an earlier offset (bytes resent), across a restart, the finished file is
// the uninterrupted upload's, and resent bytes that differ are refused.
func TestResumeEveryWay(t *testing.T) {
	// 17 chunks span several of the direct writer's blocks (decision 0127):
	// cuts inside and after the first, resumed at unaligned offsets.
	big := make([]byte, 17*chunk+1000)
	rand.Read(big)
	data := big[:3*chunk+1000]
	const caller = "spiffe://td/builder/a"
	type cut struct{ cut, from int }
	cases := []cut{
		{0, 0}, {1, 1}, {chunk - 1, chunk - 1}, {chunk, chunk}, {chunk + 1, chunk + 1}, {2 * chunk, 2 * chunk},
		{len(data), len(data)}, {len(data) - 1, 5}, {2*chunk + 5, chunk + 3}, {2 * chunk, 0}, {chunk + 10, chunk + 2},
	}
	for _, c := range []cut{{9*chunk + 7, 9*chunk + 7}, {13 * chunk, 4*chunk + 1}, {len(big), 16 * chunk}, {len(big) - 1, 0}} {
		cases = append(cases, cut{-c.cut, c.from}) // negative: a cut of big
	}
	for i, tc := range cases {
		data := data
		if tc.cut < 0 {
			data, tc.cut = big, -tc.cut
		}
		dir, c := t.TempDir(), &clock{now: time.Now()}
		id := fmt.Sprintf("upload-id-%07d", i)
		write(t, open(t, dir, c), caller, id, 0, data[:tc.cut]).Suspend()
		s := open(t, dir, c) // a restart
		if n, err := s.Status(caller, id); err != nil || n != int64(tc.cut) {
			t.Fatalf("cut at %d: status %d %v", tc.cut, n, err)
		}
		u := write(t, s, caller, id, int64(tc.from), data[tc.from:])
		if got := finished(t, u); !bytes.Equal(got, data) {
			t.Fatalf("cut at %d, resumed from %d: the finished upload differs", tc.cut, tc.from)
		}
		u.Discard()
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("cut at %d: %d files left after Discard", tc.cut, len(entries))
		}
	}
	// Resent bytes that are not those held: refused, never sealed again.
	dir, c := t.TempDir(), &clock{now: time.Now()}
	s := open(t, dir, c)
	write(t, s, caller, "upload-id-changed", 0, data[:2*chunk+7]).Suspend()
	u, err := s.Begin(t.Context(), caller, "upload-id-changed", 10)
	if err != nil {
		t.Fatal(err)
	}
	other := bytes.Clone(data[10:])
	other[chunk] ^= 1
	if _, err := u.Write(other); !errors.Is(err, ErrInvalid) {
		t.Fatalf("resent bytes that differ: %v, want ErrInvalid", err)
	}
	u.Discard()
	// An upload that ends before the bytes already held is refused.
	write(t, s, caller, "upload-id-shorter", 0, data[:2*chunk+7]).Suspend()
	u = write(t, s, caller, "upload-id-shorter", 0+chunk, data[chunk:2*chunk])
	if _, err := u.Finish(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an upload ending within what was held: %v, want ErrInvalid", err)
	}
	u.Discard()
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
	if _, err := s.Begin(t.Context(), "a", "upload-id-0000001", 3); !errors.Is(err, ErrNotFound) {
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
		if _, err := s.Begin(t.Context(), "a", tt.id, tt.off); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q at %d: %v, want ErrInvalid", tt.id, tt.off, err)
		}
	}
	write(t, s, "a", "upload-id-0000001", 0, []byte("abc")).Suspend()
	if _, err := s.Begin(t.Context(), "a", "upload-id-0000001", 4); !errors.Is(err, ErrInvalid) {
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
	for _, suffix := range []string{keySuffix, tailSuffix} {
		if b, _ := os.ReadFile(pa + suffix); bytes.Contains(b, []byte("secret plaintext")) {
			t.Fatalf("partial's %s file holds plaintext", suffix)
		}
	}
	flipped := bytes.Clone(raw)
	flipped[len(flipped)-fullChunk] ^= 1
	if err := os.WriteFile(pa, flipped, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(t.Context(), caller, a, int64(len(data))); !errors.Is(err, ErrInvalid) {
		t.Fatalf("resume over a tampered record: %v, want ErrInvalid", err)
	}
	if n, err := s.Status(caller, a); err != nil || n >= int64(len(data)) || n%chunk != 0 {
		t.Fatalf("status after a tampered chunk: %d %v, want the authentic whole chunks", n, err)
	}

	// Another upload's files put in this one's place (same caller, same
	// key back end) do not resume: the chunks are under another key, and
	// its key file is bound to its own name.
	write(t, s, caller, a, 0, data).Suspend()
	other, _ := os.ReadFile(pb)
	if err := os.WriteFile(pa, other, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(t.Context(), caller, a, chunk); !errors.Is(err, ErrInvalid) {
		t.Fatalf("resume from a swapped file: %v, want ErrInvalid", err)
	}
	otherKey, _ := os.ReadFile(pb + keySuffix)
	if err := os.WriteFile(pa+keySuffix, otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(t.Context(), caller, a, chunk); !errors.Is(err, ErrInvalid) {
		t.Fatalf("resume from another upload's files: %v, want ErrInvalid", err)
	}

	// A garbage key file: the partial is dropped, upload from 0.
	if err := os.WriteFile(pb+keySuffix, []byte("not a partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(t.Context(), caller, b, 10); !errors.Is(err, ErrNotFound) {
		t.Fatalf("resume of a damaged file: %v, want ErrNotFound", err)
	}

	// The KEK down: nothing starts, nothing resumes; the file is kept.
	down, err := Open(Config{Dir: dir, TTL: time.Hour, MaxPerCaller: 2, KEK: downKEK{}, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := down.Begin(t.Context(), caller, "upload-id-ccccccc3", 0); !errors.Is(err, sealed.ErrUnavailable) {
		t.Fatalf("start with the KEK down: %v", err)
	}
	write(t, s, caller, a, 0, data).Suspend()
	if _, err := down.Begin(t.Context(), caller, a, 100); !errors.Is(err, sealed.ErrUnavailable) {
		t.Fatalf("resume with the KEK down: %v", err)
	}
	if n, err := s.Status(caller, a); err != nil || n != int64(len(data)) {
		t.Fatalf("status after the KEK was down: %d %v", n, err)
	}
	if _, err := Open(Config{Dir: dir, TTL: time.Hour, MaxPerCaller: 2}); err == nil {
		t.Fatal("Open without a KEK succeeded")
	}
}

// FuzzPartialFile: whatever bytes are on disk as a partial upload's chunks,
// key and tail files, Status and a resume return an error or a consistent
// result, never panic.
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
	u, err := s.Begin(f.Context(), caller, id, 0)
	if err != nil {
		f.Fatal(err)
	}
	u.Write(bytes.Repeat([]byte{7}, chunk+100))
	u.Suspend()
	p := filepath.Join(dir, name(caller, id))
	seed, _ := os.ReadFile(p)
	key, _ := os.ReadFile(p + keySuffix)
	tail, _ := os.ReadFile(p + tailSuffix)
	f.Add(seed, key, tail, int64(50))
	f.Add(seed[:100], key, tail[:30], int64(chunk+100))
	f.Add([]byte("x"), []byte(keyMagic+"\x00\x04\x00\x00\x00\x05hello"), []byte{}, int64(1))
	f.Fuzz(func(t *testing.T, b, key, tail []byte, off int64) {
		for file, content := range map[string][]byte{p: b, p + keySuffix: key, p + tailSuffix: tail} {
			if err := os.WriteFile(file, content, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		n, serr := s.Status(caller, id)
		if serr == nil && n < 0 {
			t.Fatalf("status %d", n)
		}
		u, err := s.Begin(t.Context(), caller, id, off)
		if err != nil {
			return
		}
		if u.Size() != off {
			t.Fatalf("resumed at %d with %d bytes", off, u.Size())
		}
		u.Discard()
	})
}
