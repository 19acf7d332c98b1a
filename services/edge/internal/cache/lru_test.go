package cache_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/stream"
	"github.com/custody-dev/custody/services/edge/internal/cache"
)

func cachedFiles(t *testing.T, dir string) map[string]bool {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, "sha256-*"))
	tmp, _ := filepath.Glob(filepath.Join(dir, "tmp", "fetch-*"))
	out := map[string]bool{}
	for _, n := range append(names, tmp...) {
		out[filepath.Base(n)] = true
	}
	return out
}

// onDisk is the size a blob of n bytes takes in the cache.
func onDisk(t *testing.T, n int) int64 {
	t.Helper()
	o := &memOrigin{}
	c, _ := open(t, cache.Config{Dir: t.TempDir(), Origin: o, Chunk: stream.MinChunk})
	d, hx := o.add(random(n))
	if _, _, err := readAll(t, c, d, hx); err != nil {
		t.Fatal(err)
	}
	used, _ := c.Used()
	return used
}

// The cache holds at most MaxBytes: a new blob evicts the least recently
// used ones, and a hit counts as a use.
func TestCacheEvictsTheLeastRecentlyUsed(t *testing.T) {
	const n = 3 * stream.MinChunk
	size := onDisk(t, n)
	dir := t.TempDir()
	o := &memOrigin{}
	c, _ := open(t, cache.Config{Dir: dir, Origin: o, Chunk: stream.MinChunk, MaxBytes: 2 * size})
	a, ax := o.add(random(n))
	b, bx := o.add(random(n))
	d, dx := o.add(random(n))
	for _, x := range [][2]string{{a, ax}, {b, bx}, {a, ax}} { // a, b, then a again: b is the oldest
		if _, _, err := readAll(t, c, x[0], x[1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := readAll(t, c, d, dx); err != nil {
		t.Fatal(err)
	}
	files := cachedFiles(t, dir)
	if !files["sha256-"+ax] || files["sha256-"+bx] || !files["sha256-"+dx] || len(files) != 2 {
		t.Fatalf("cache holds %v, want a and d (b was the least recently used)", files)
	}
	if used, ev := c.Used(); used != 2*size || ev != 1 {
		t.Fatalf("used %d bytes after %d evictions, want %d after 1", used, ev, 2*size)
	}
	// b comes back from the origin; a is now the oldest and goes.
	if _, hit, err := readAll(t, c, b, bx); err != nil || hit {
		t.Fatalf("b again: hit %v, %v; want a miss", hit, err)
	}
	if files := cachedFiles(t, dir); files["sha256-"+ax] || len(files) != 2 {
		t.Fatalf("cache holds %v, want d and b", files)
	}
}

// A blob being served or filled is never evicted: when only those could
// make room, the new blob is refused (ErrFull) and served once one is
// released. A blob larger than the whole cache is refused.
func TestCacheNeverEvictsABlobInUse(t *testing.T) {
	const n = 3 * stream.MinChunk
	size := onDisk(t, n)
	dir := t.TempDir()
	o := &memOrigin{}
	c, _ := open(t, cache.Config{Dir: dir, Origin: o, Chunk: stream.MinChunk, MaxBytes: 2 * size})
	a, ax := o.add(random(n))
	b, bx := o.add(random(n))
	d, dx := o.add(random(n))
	for _, x := range [][2]string{{a, ax}, {b, bx}} {
		if _, _, err := readAll(t, c, x[0], x[1]); err != nil {
			t.Fatal(err)
		}
	}
	ra, hit, err := c.Open(context.Background(), a, ax)
	if err != nil || !hit {
		t.Fatalf("open a: hit %v, %v", hit, err)
	}
	rb, _, err := c.Open(context.Background(), b, bx)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Open(context.Background(), d, dx); !errors.Is(err, cache.ErrFull) {
		t.Fatalf("open d with a and b being served = %v, want ErrFull", err)
	}
	// What is being read stays readable and on disk.
	if got, err := io.ReadAll(ra); err != nil || len(got) != n {
		t.Fatalf("read a while full: %d bytes, %v", len(got), err)
	}
	ra.Close()
	if _, _, err := readAll(t, c, d, dx); err != nil {
		t.Fatalf("open d after a was released: %v", err)
	}
	files := cachedFiles(t, dir)
	if files["sha256-"+ax] || !files["sha256-"+bx] || !files["sha256-"+dx] {
		t.Fatalf("cache holds %v, want b (still open) and d", files)
	}
	rb.Close()

	big, bigx := o.add(random(3 * n))
	if _, _, err := c.Open(context.Background(), big, bigx); !errors.Is(err, cache.ErrFull) {
		t.Fatalf("open a blob larger than the cache = %v, want ErrFull", err)
	}
	if used, _ := c.Used(); used > 2*size {
		t.Fatalf("used %d bytes, bound %d", used, 2*size)
	}
}

// stallOrigin announces a size, sends first bytes, then sends nothing until
// the fetch is cancelled; with before set it does not even answer.
type stallOrigin struct {
	blob   []byte
	sent   int
	before bool
	opens  int
}

func (o *stallOrigin) Open(ctx context.Context, _ string) (io.ReadCloser, int64, error) {
	o.opens++
	if o.before {
		<-ctx.Done()
		return nil, 0, ctx.Err()
	}
	return io.NopCloser(io.MultiReader(bytes.NewReader(o.blob[:o.sent]), ctxReader{ctx})), int64(len(o.blob)), nil
}

type ctxReader struct{ ctx context.Context }

func (r ctxReader) Read([]byte) (int, error) { <-r.ctx.Done(); return 0, r.ctx.Err() }

// A stalled origin is cut after the stall timeout: the reader gets
// ErrStalled instead of hanging, the partial file is removed and nothing
// is cached or reserved.
func TestStalledOriginIsAborted(t *testing.T) {
	blob := random(4 * stream.MinChunk)
	for _, tc := range []struct {
		name   string
		origin *stallOrigin
	}{
		{"after the first chunk", &stallOrigin{blob: blob, sent: stream.MinChunk + 10}},
		{"before the first message", &stallOrigin{blob: blob, before: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c, _ := open(t, cache.Config{Dir: dir, Origin: tc.origin, Chunk: stream.MinChunk, StallTimeout: 200 * time.Millisecond, MaxBytes: 1 << 30})
			d, hx := (&memOrigin{}).add(blob)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a generous guard; the stall ends it
			defer cancel()
			var err error
			b, _, err := c.Open(ctx, d, hx)
			if err == nil {
				_, err = io.ReadAll(b)
				b.Close()
			}
			if !errors.Is(err, cache.ErrStalled) || ctx.Err() != nil {
				t.Fatalf("read = %v (guard %v), want ErrStalled", err, ctx.Err())
			}
			// The fill's goroutine removes its file once its readers are gone.
			deadline := time.Now().Add(30 * time.Second)
			for len(cachedFiles(t, dir)) > 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if files := cachedFiles(t, dir); len(files) > 0 {
				t.Fatalf("left on disk: %v", files)
			}
			if used, _ := c.Used(); used != 0 {
				t.Fatalf("%d bytes still reserved", used)
			}
		})
	}
}
