package cache_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/stream"
	"github.com/custody-dev/custody/services/edge/internal/cache"
)

// memOrigin serves blobs from memory, as the publisher's Download would.
type memOrigin struct {
	mu    sync.Mutex
	blobs map[string][]byte
	opens atomic.Int64
}

func (o *memOrigin) Open(_ context.Context, digest string) (io.ReadCloser, int64, error) {
	o.opens.Add(1)
	o.mu.Lock()
	b, ok := o.blobs[digest]
	o.mu.Unlock()
	if !ok {
		return nil, 0, fmt.Errorf("%w: %s", cache.ErrNotFound, digest)
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

func (o *memOrigin) add(b []byte) (digest, hexDigest string) {
	sum := sha256.Sum256(b)
	hexDigest = hex.EncodeToString(sum[:])
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.blobs == nil {
		o.blobs = map[string][]byte{}
	}
	o.blobs["sha256:"+hexDigest] = b
	return "sha256:" + hexDigest, hexDigest
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

type failures struct {
	mu sync.Mutex
	n  map[string]int
}

func (f *failures) record(where string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n[where]++
}

func (f *failures) get(where string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n[where]
}

func open(t testing.TB, cfg cache.Config) (*cache.Cache, *failures) {
	t.Helper()
	c, _, err := cache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &failures{n: map[string]int{}}
	c.OnIntegrityFailure = f.record
	return c, f
}

func readAll(t testing.TB, c *cache.Cache, digest, hexDigest string) ([]byte, bool, error) {
	t.Helper()
	b, hit, err := c.Open(context.Background(), digest, hexDigest)
	if err != nil {
		return nil, false, err
	}
	defer b.Close()
	got, err := io.ReadAll(b)
	return got, hit, err
}

// TestNoPlaintextOnDisk: no 64-byte window of a cached blob is anywhere
// under the cache directory. Every 64-byte window of the blob contains one
// of its 32-byte blocks at a multiple of 32, so looking for those at every
// offset of every file finds any.
func TestNoPlaintextOnDisk(t *testing.T) {
	dir := t.TempDir()
	o := &memOrigin{}
	blob := random(3*stream.DefaultChunk + 1000)
	d, hx := o.add(blob)
	c, _ := open(t, cache.Config{Dir: dir, Origin: o})
	if got, _, err := readAll(t, c, d, hx); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("first read: %d bytes, %v", len(got), err)
	}
	blocks := map[string]bool{}
	for i := 0; i+32 <= len(blob); i += 32 {
		blocks[string(blob[i:i+32])] = true
	}
	files := 0
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i := 0; i+32 <= len(b); i++ {
			if blocks[string(b[i:i+32])] {
				return fmt.Errorf("%s holds plaintext at offset %d", path, i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files != 1 {
		t.Fatalf("cache dir holds %d files, want the one cached blob", files)
	}
}

func TestRangesAndHits(t *testing.T) {
	o := &memOrigin{}
	c, _ := open(t, cache.Config{Dir: t.TempDir(), Origin: o, Chunk: stream.MinChunk})
	const ch = stream.MinChunk
	for _, size := range []int{0, 1, ch - 1, ch, ch + 1, 5*ch + 7} {
		blob := random(size)
		d, hx := o.add(blob)
		if got, hit, err := readAll(t, c, d, hx); err != nil || hit || !bytes.Equal(got, blob) {
			t.Fatalf("size %d miss: %d bytes, hit %v, %v", size, len(got), hit, err)
		}
		for _, off := range []int{0, 1, ch - 1, ch, ch + 1, size / 2, size - 1, size} {
			if off < 0 || off > size {
				continue
			}
			b, hit, err := c.Open(t.Context(), d, hx)
			if err != nil || !hit || b.Size() != int64(size) {
				t.Fatalf("size %d: open: hit %v, %v", size, hit, err)
			}
			if _, err := b.Seek(int64(off), io.SeekStart); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(b)
			b.Close()
			if err != nil || !bytes.Equal(got, blob[off:]) {
				t.Fatalf("size %d from %d: %d bytes, %v", size, off, len(got), err)
			}
		}
	}
	if n := o.opens.Load(); n != 6 {
		t.Fatalf("origin opened %d times, want once per blob", n)
	}
}

// TestTamperedFilesAreNeverServed: a flipped byte in a chunk ends the read
// before any byte of that chunk, evicts the file and counts the failure; a
// damaged header, a file under another digest's name and a truncated file
// are evicted and fetched again.
func TestTamperedFilesAreNeverServed(t *testing.T) {
	const ch = stream.MinChunk
	sealedChunk := ch + stream.Overhead
	hdr := 22 + 32 + 8 + 4 + 32
	for _, tc := range []struct {
		name string
		edit func(path, other string) error
		// readable: how many bytes come out before the failure; -1: the
		// file is refetched and the read succeeds.
		readable int
	}{
		{"byte in chunk 0", flip(hdr + 5), 0},
		{"tag of chunk 2", flip(hdr + 3*sealedChunk - 1), 2 * ch},
		{"byte in the last chunk", flip(hdr + 3*sealedChunk + 1), 3 * ch},
		{"header size", flip(22 + 32 + 7), -1},
		{"header salt", flip(30), -1},
		{"magic", flip(0), -1},
		{"truncated", func(p, _ string) error { return os.Truncate(p, int64(hdr+sealedChunk)) }, -1},
		{"another digest's file", func(p, other string) error { return os.Rename(other, p) }, -1},
		{"empty", func(p, _ string) error { return os.WriteFile(p, nil, 0o600) }, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := &memOrigin{}
			c, fails := open(t, cache.Config{Dir: dir, Origin: o, Chunk: ch})
			blob := random(3*ch + 100)
			d, hx := o.add(blob)
			od, ohx := o.add(random(3*ch + 100))
			for _, x := range [][2]string{{d, hx}, {od, ohx}} {
				if _, _, err := readAll(t, c, x[0], x[1]); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(dir, "sha256-"+hx)
			if err := tc.edit(path, filepath.Join(dir, "sha256-"+ohx)); err != nil {
				t.Fatal(err)
			}
			got, hit, err := readAll(t, c, d, hx)
			if tc.readable < 0 {
				if err != nil || hit || !bytes.Equal(got, blob) {
					t.Fatalf("got %d bytes, hit %v, %v; want the blob fetched again", len(got), hit, err)
				}
			} else {
				if !errors.Is(err, cache.ErrIntegrity) || !strings.Contains(err.Error(), d) {
					t.Fatalf("read: %v, want ErrIntegrity naming the digest", err)
				}
				if len(got) != tc.readable || !bytes.Equal(got, blob[:len(got)]) {
					t.Fatalf("released %d bytes, want the %d before the bad chunk", len(got), tc.readable)
				}
				if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("corrupted file not evicted: %v", err)
				}
				if got, hit, err := readAll(t, c, d, hx); err != nil || hit || !bytes.Equal(got, blob) {
					t.Fatalf("after eviction: %d bytes, hit %v, %v; want a fresh fetch", len(got), hit, err)
				}
			}
			if n := fails.get("edge-cache"); n != 1 {
				t.Fatalf("edge-cache integrity failures = %d, want 1", n)
			}
		})
	}
}

func flip(at int) func(path, _ string) error {
	return func(path, _ string) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		b[at] ^= 0x20
		return os.WriteFile(path, b, 0o600)
	}
}

// TestRestartDropsWhatItCannotRead: with a fresh key (what the edge does)
// every cached file is dropped on start; with the same key, kept.
func TestRestartDropsWhatItCannotRead(t *testing.T) {
	dir := t.TempDir()
	o := &memOrigin{}
	key := random(32)
	c, _ := open(t, cache.Config{Dir: dir, Origin: o, Key: key})
	var digests [][2]string
	for range 3 {
		d, hx := o.add(random(1000))
		if _, _, err := readAll(t, c, d, hx); err != nil {
			t.Fatal(err)
		}
		digests = append(digests, [2]string{d, hx})
	}
	if _, dropped, err := cache.New(cache.Config{Dir: dir, Origin: o, Key: key}); err != nil || dropped != 0 {
		t.Fatalf("reopen with the same key: dropped %d, %v; want 0", dropped, err)
	}
	if _, dropped, err := cache.New(cache.Config{Dir: dir, Origin: o}); err != nil || dropped != 3 {
		t.Fatalf("reopen with a fresh key: dropped %d, %v; want 3", dropped, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "sha256-*")); len(left) != 0 {
		t.Fatalf("unreadable files kept: %v", left)
	}
}

func TestOriginLies(t *testing.T) {
	blob := random(2*stream.MinChunk + 3)
	sum := sha256.Sum256(blob)
	hx := hex.EncodeToString(sum[:])
	d := "sha256:" + hx
	for _, tc := range []struct {
		name  string
		bytes []byte
		size  int64
	}{
		// The last byte flipped: a fixed byte would be the truth for one
		// random blob in 256.
		{"other bytes", append(bytes.Clone(blob[:len(blob)-1]), ^blob[len(blob)-1]), int64(len(blob))},
		{"fewer bytes than claimed", blob[:len(blob)-1], int64(len(blob))},
		{"more bytes than claimed", append(bytes.Clone(blob), 1), int64(len(blob))},
		{"size too large", blob, cache.MaxSize + 1},
		{"negative size", blob, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c, fails := open(t, cache.Config{Dir: dir, Origin: lyingOrigin{tc.bytes, tc.size}, Chunk: stream.MinChunk})
			if _, _, err := readAll(t, c, d, hx); !errors.Is(err, cache.ErrIntegrity) || !strings.Contains(err.Error(), d) {
				t.Fatalf("read: %v, want ErrIntegrity naming the digest", err)
			}
			if fails.get("origin") != 1 {
				t.Fatalf("origin integrity failures = %d, want 1", fails.get("origin"))
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "*", "*")); len(left) != 0 {
				t.Fatalf("left behind: %v", left)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "sha256-*")); len(left) != 0 {
				t.Fatalf("cached: %v", left)
			}
		})
	}
}

type lyingOrigin struct {
	b    []byte
	size int64
}

func (o lyingOrigin) Open(context.Context, string) (io.ReadCloser, int64, error) {
	return io.NopCloser(bytes.NewReader(o.b)), o.size, nil
}

func TestConcurrentMissesOpenTheOriginOnce(t *testing.T) {
	o := &memOrigin{}
	c, _ := open(t, cache.Config{Dir: t.TempDir(), Origin: o})
	blob := random(1 << 20)
	d, hx := o.add(blob)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if got, _, err := readAll(t, c, d, hx); err != nil || !bytes.Equal(got, blob) {
				t.Errorf("read: %d bytes, %v", len(got), err)
			}
		})
	}
	wg.Wait()
	if n := o.opens.Load(); n != 1 {
		t.Fatalf("16 concurrent misses opened the origin %d times, want 1", n)
	}
}

// pipeOrigin serves one blob through a pipe the test writes.
type pipeOrigin struct {
	r     *io.PipeReader
	size  int64
	opens atomic.Int64
}

func (o *pipeOrigin) Open(context.Context, string) (io.ReadCloser, int64, error) {
	o.opens.Add(1)
	return o.r, o.size, nil
}

// TestMissStreamsWhileItFills: readers get the chunks the origin has sent
// while the rest is still on its way, several readers share one fetch,
// the file being filled holds no plaintext, and the last chunk comes out
// only once the digest matched.
func TestMissStreamsWhileItFills(t *testing.T) {
	const ch = stream.MinChunk
	blob := random(4*ch + 10)
	sum := sha256.Sum256(blob)
	hx := hex.EncodeToString(sum[:])
	d := "sha256:" + hx
	pr, pw := io.Pipe()
	o := &pipeOrigin{r: pr, size: int64(len(blob))}
	dir := t.TempDir()
	c, _ := open(t, cache.Config{Dir: dir, Origin: o, Chunk: ch})
	var readers []*cache.Blob
	for range 3 {
		b, hit, err := c.Open(t.Context(), d, hx)
		if err != nil || hit || b.Size() != int64(len(blob)) {
			t.Fatalf("open: hit %v, size %d, %v", hit, b.Size(), err)
		}
		defer b.Close()
		readers = append(readers, b)
	}
	if _, err := pw.Write(blob[:2*ch]); err != nil {
		t.Fatal(err)
	}
	for i, b := range readers {
		got := make([]byte, 2*ch)
		if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, blob[:2*ch]) {
			t.Fatalf("reader %d: first two chunks: %v", i, err)
		}
	}
	// Mid-fill: ciphertext only.
	tmps, _ := filepath.Glob(filepath.Join(dir, "tmp", "fetch-*"))
	if len(tmps) != 1 {
		t.Fatalf("fills in progress: %v, want one", tmps)
	}
	b, err := os.ReadFile(tmps[0])
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+32 <= 2*ch; i += 32 {
		if bytes.Contains(b, blob[i:i+32]) {
			t.Fatalf("file being filled holds plaintext from offset %d", i)
		}
	}
	// Everything but the last chunk is out before the origin has finished.
	if _, err := pw.Write(blob[2*ch:]); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2*ch)
	if _, err := io.ReadFull(readers[0], got); err != nil || !bytes.Equal(got, blob[2*ch:4*ch]) {
		t.Fatalf("chunks 2 and 3: %v", err)
	}
	done := make(chan []byte)
	go func() {
		rest, _ := io.ReadAll(readers[0])
		done <- rest
	}()
	select {
	case <-done:
		t.Fatal("the last chunk came out before the origin's stream ended")
	case <-time.After(50 * time.Millisecond):
	}
	pw.Close()
	if rest := <-done; !bytes.Equal(rest, blob[4*ch:]) {
		t.Fatalf("last chunk: %d bytes", len(rest))
	}
	for i, b := range readers[1:] {
		if rest, err := io.ReadAll(b); err != nil || !bytes.Equal(rest, blob[2*ch:]) {
			t.Fatalf("reader %d: rest: %d bytes, %v", i+1, len(rest), err)
		}
	}
	if got, hit, err := readAll(t, c, d, hx); err != nil || !hit || !bytes.Equal(got, blob) {
		t.Fatalf("after the fill: hit %v, %v", hit, err)
	}
	if n := o.opens.Load(); n != 1 {
		t.Fatalf("origin opened %d times, want 1", n)
	}
}

// TestFailedDigestWithholdsTheLastChunk: bytes that do not hash to the
// digest stream up to the last chunk, which never leaves; the read fails,
// nothing is cached, and the next request fetches again.
func TestFailedDigestWithholdsTheLastChunk(t *testing.T) {
	const ch = stream.MinChunk
	blob := random(3*ch + 10)
	sum := sha256.Sum256(blob)
	hx := hex.EncodeToString(sum[:])
	d := "sha256:" + hx
	bad := bytes.Clone(blob)
	bad[5] ^= 1 // in the first chunk: already streamed when the digest fails
	dir := t.TempDir()
	c, fails := open(t, cache.Config{Dir: dir, Origin: lyingOrigin{bad, int64(len(bad))}, Chunk: ch})
	got, _, err := readAll(t, c, d, hx)
	if !errors.Is(err, cache.ErrIntegrity) || len(got) > 3*ch {
		t.Fatalf("read %d bytes, %v; want at most the first 3 chunks and ErrIntegrity", len(got), err)
	}
	if fails.get("origin") != 1 {
		t.Fatalf("origin failures = %d, want 1", fails.get("origin"))
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*", "*")); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "sha256-*")); len(left) != 0 {
		t.Fatalf("cached: %v", left)
	}
}

// TestPurgeDuringAFill: a purged blob's fill still serves its reader but is
// not cached.
func TestPurgeDuringAFill(t *testing.T) {
	const ch = stream.MinChunk
	blob := random(2*ch + 1)
	sum := sha256.Sum256(blob)
	hx := hex.EncodeToString(sum[:])
	pr, pw := io.Pipe()
	dir := t.TempDir()
	c, _ := open(t, cache.Config{Dir: dir, Origin: &pipeOrigin{r: pr, size: int64(len(blob))}, Chunk: ch})
	b, _, err := c.Open(t.Context(), "sha256:"+hx, hx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := c.PurgeAll(); err != nil {
		t.Fatal(err)
	}
	go func() { pw.Write(blob); pw.Close() }()
	if got, err := io.ReadAll(b); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("reader: %d bytes, %v", len(got), err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "sha256-*")); len(left) != 0 {
		t.Fatalf("purged blob cached: %v", left)
	}
}
