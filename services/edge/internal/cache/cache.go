// Package cache is the edge's content cache: blobs named by digest, fetched
// from the origin on a miss, stored encrypted under a key that lives only
// in the edge's memory, and authenticated chunk by chunk as they are served.
package cache

import (
	"container/list"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/custody-dev/custody/libs/stream"
)

// Errors callers map to HTTP statuses.
var (
	ErrNotFound = errors.New("not found at the origin")
	// ErrIntegrity: bytes failed a check: the origin's do not hash to the
	// digest (or the origin says its copy is corrupted), or a cached chunk
	// fails authentication. No byte of what failed is released.
	ErrIntegrity = errors.New("integrity failure")
)

// Origin is where misses are fetched from.
type Origin interface {
	// Open returns a reader of the blob's bytes and the size the origin
	// claims for it (checked against what it sends). Its errors wrap
	// ErrNotFound, ErrIntegrity or say the origin is down.
	Open(ctx context.Context, digest string) (io.ReadCloser, int64, error)
}

// Config configures a cache.
type Config struct {
	// Dir holds the cache files and, under tmp/, the fills in progress.
	Dir    string
	Origin Origin
	// Key is the cache key (32 bytes). Nil draws a fresh one, which is
	// what the edge does: nothing cached before a restart can be read
	// after it, and New drops it. Tests pass a key to reopen a cache.
	Key []byte
	// Chunk is the plaintext chunk size of new cache files; 0 means
	// stream.DefaultChunk.
	Chunk int
	// FillTimeout bounds one fetch from the origin; 0 means 30 minutes.
	FillTimeout time.Duration
	// StallTimeout aborts a fetch from the origin that delivers no byte for
	// that long (also before its first message); 0 means 30 seconds. The
	// partial file is removed and its readers get ErrStalled.
	StallTimeout time.Duration
	// MaxBytes bounds the bytes of cache files and fills on disk; the
	// least recently used blobs that nobody reads are evicted to make
	// room. 0 means no bound (tests); the edge always sets one.
	MaxBytes int64
}

// ErrStalled means the origin sent nothing for the stall timeout; the fill
// was aborted and nothing of it is cached.
var ErrStalled = errors.New("origin stalled")

// Cache stores verified blobs under a directory. It is safe for concurrent
// use; concurrent misses of one digest fetch it once.
type Cache struct {
	dir          string
	origin       Origin
	key          []byte
	chunk        int
	fillTimeout  time.Duration
	stallTimeout time.Duration
	maxBytes     int64
	// OnIntegrityFailure is called with where bytes failed ("origin" or
	// "edge-cache"), for metrics. Set it before the first Open.
	OnIntegrityFailure func(where string)
	// OnEvict is called, with the cache locked, for each blob evicted to
	// make room, for metrics. Set it before the first Open.
	OnEvict func()

	// mu guards fills and the LRU index, and orders a fill's rename
	// against evictions, so an eviction never removes a fresh copy that
	// replaced the corrupted one.
	mu        sync.Mutex
	fills     map[string]*fill
	entries   map[string]*entry
	lru       *list.List // of *entry, most recently used first
	used      int64
	evictions int
}

// New opens the cache in cfg.Dir. Fills a crash left are removed, and so is
// every cache file that does not authenticate under the cache key (with a
// fresh key: all of them); it returns how many files it dropped.
func New(cfg Config) (*Cache, int, error) {
	if cfg.Chunk == 0 {
		cfg.Chunk = stream.DefaultChunk
	}
	if cfg.Chunk < stream.MinChunk || cfg.Chunk > stream.MaxChunk {
		return nil, 0, fmt.Errorf("cache chunk size %d out of range", cfg.Chunk)
	}
	if cfg.FillTimeout <= 0 {
		cfg.FillTimeout = 30 * time.Minute
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 30 * time.Second
	}
	if cfg.MaxBytes < 0 {
		return nil, 0, fmt.Errorf("cache size bound %d is negative", cfg.MaxBytes)
	}
	key := cfg.Key
	if key == nil {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, 0, fmt.Errorf("cache key: %w", err)
		}
	}
	if len(key) != 32 {
		return nil, 0, fmt.Errorf("cache key of %d bytes, want 32", len(key))
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "tmp"), 0o700); err != nil {
		return nil, 0, err
	}
	c := &Cache{dir: cfg.Dir, origin: cfg.Origin, key: key, chunk: cfg.Chunk, fillTimeout: cfg.FillTimeout,
		stallTimeout: cfg.StallTimeout, maxBytes: cfg.MaxBytes,
		OnIntegrityFailure: func(string) {}, OnEvict: func() {}, fills: map[string]*fill{}, entries: map[string]*entry{}, lru: list.New()}
	stale, _ := filepath.Glob(filepath.Join(cfg.Dir, "tmp", "fetch-*"))
	for _, f := range stale {
		os.Remove(f)
	}
	names, err := filepath.Glob(filepath.Join(cfg.Dir, "sha256-*"))
	if err != nil {
		return nil, 0, err
	}
	dropped := 0
	for _, name := range names {
		hexDigest := strings.TrimPrefix(filepath.Base(name), "sha256-")
		c.mu.Lock()
		f, err := c.openFile("sha256:"+hexDigest, name)
		if err == nil {
			// Kept (a test's reopen with the same key): indexed, and
			// evicted like any other if they do not fit.
			c.addLocked(hexDigest, f.fileSize, nil)
			if err := c.reserveLocked(0); err != nil {
				c.dropLocked(hexDigest)
				os.Remove(name)
			}
		}
		c.mu.Unlock()
		if err == nil {
			f.Close()
			continue
		}
		// openFile evicted it already unless it could not even be read.
		if err := os.Remove(name); err == nil || errors.Is(err, fs.ErrNotExist) {
			dropped++
		}
	}
	return c, dropped, nil
}

func (c *Cache) path(hexDigest string) string { return filepath.Join(c.dir, "sha256-"+hexDigest) }

// Open returns the blob "sha256:<hex>" and whether it was in the cache
// (hit). On a miss it is fetched from the origin, once for concurrent
// misses, and the blob streams while it fills: Open returns once the origin
// has announced the size, and reads wait for the chunks (decision 0083).
// The caller must Close the blob. Every byte read from it was
// authenticated: a cached file that fails is evicted, counted and never
// served (a header that fails is refetched at once; a chunk that fails
// ends the read with ErrIntegrity), and a fill's last chunk is released
// only once the whole blob matched its digest.
func (c *Cache) Open(ctx context.Context, digest, hexDigest string) (*Blob, bool, error) {
	c.mu.Lock()
	fl := c.fills[hexDigest]
	if fl == nil {
		f, err := c.openFile(digest, c.path(hexDigest))
		if err == nil {
			e := c.entries[hexDigest]
			if e == nil {
				e = c.addLocked(hexDigest, f.fileSize, nil)
			}
			c.touchLocked(e)
			e.readers++
			closeFile := f.close
			f.close = func() error {
				c.mu.Lock()
				e.readers--
				c.mu.Unlock()
				return closeFile()
			}
			c.mu.Unlock()
			return f, true, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			c.mu.Unlock()
			return nil, false, err
		}
		fl = c.startFill(ctx, digest, hexDigest)
	}
	fl.acquire()
	if e := c.entries[hexDigest]; e != nil {
		c.touchLocked(e)
	}
	c.mu.Unlock()
	b, err := fl.blob(ctx, c, digest, c.path(hexDigest))
	if err != nil {
		fl.release()
		return nil, false, err
	}
	return b, false, nil
}

// openFile opens and authenticates a cache file's header; c.mu is held. A
// file that does not authenticate is evicted, counted, and reported as
// fs.ErrNotExist so that the caller fetches it again.
func (c *Cache) openFile(digest, path string) (*Blob, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fail := func(why string) (*Blob, error) {
		c.OnIntegrityFailure("edge-cache")
		c.evictLocked(f, path)
		f.Close()
		return nil, fmt.Errorf("cached %s %s and is evicted: %w", digest, why, fs.ErrNotExist)
	}
	buf := make([]byte, headerSize)
	if _, err := io.ReadFull(f, buf); err != nil {
		return fail("has no header")
	}
	h, err := parseHeader(buf)
	if err != nil {
		return fail(err.Error())
	}
	content, macKey, err := c.keys(&h, digest)
	if err != nil {
		f.Close()
		return nil, err
	}
	if !h.authentic(macKey) {
		return fail("has a header that fails authentication")
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.Size() != h.fileSize() {
		return fail(fmt.Sprintf("has %d bytes, want %d", st.Size(), h.fileSize()))
	}
	return &Blob{c: c, f: f, path: path, digest: digest, content: content, size: h.size, fileSize: h.fileSize(), close: f.Close,
		src: func(at int64) io.Reader { return io.NewSectionReader(f, int64(headerSize)+at, h.fileSize()) }}, nil
}

// evictLocked removes path if it still is the file f (not a fresh copy
// that a fill renamed over it since); c.mu is held.
func (c *Cache) evictLocked(f *os.File, path string) {
	have, err := f.Stat()
	if err != nil {
		return
	}
	if now, err := os.Stat(path); err == nil && os.SameFile(have, now) {
		os.Remove(path)
		if e := c.entries[strings.TrimPrefix(filepath.Base(path), "sha256-")]; e != nil && !e.filling {
			c.dropLocked(e.hex)
		}
	}
}

// Purge drops a digest from the cache and reports whether it was there. A
// fill in progress still serves the readers it has, but is not cached.
func (c *Cache) Purge(hexDigest string) (bool, error) {
	c.mu.Lock()
	if fl := c.fills[hexDigest]; fl != nil {
		fl.purged = true
	}
	if e := c.entries[hexDigest]; e != nil && !e.filling {
		c.dropLocked(hexDigest)
	}
	err := os.Remove(c.path(hexDigest))
	c.mu.Unlock()
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// PurgeAll drops every cached blob and returns how many it dropped; used
// when the kill switch goes on. It continues past errors and returns them
// joined.
func (c *Cache) PurgeAll() (int, error) {
	c.mu.Lock()
	for _, fl := range c.fills {
		fl.purged = true
	}
	for hx, e := range c.entries {
		if !e.filling {
			c.dropLocked(hx)
		}
	}
	c.mu.Unlock()
	names, err := filepath.Glob(filepath.Join(c.dir, "sha256-*"))
	if err != nil {
		return 0, err
	}
	var errs []error
	n := 0
	for _, name := range names {
		if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// Blob is one reader of a cached blob: an io.ReadSeeker of its plaintext
// for http.ServeContent. It is not safe for concurrent use.
type Blob struct {
	c       *Cache
	f       *os.File
	path    string
	digest  string
	content *stream.Cipher
	size    int64
	// fileSize is the cache file's size on disk.
	fileSize int64
	// src returns the sealed stream from sealed offset at.
	src   func(at int64) io.Reader
	close func() error

	pos int64
	r   io.Reader
	err error
}

var _ io.ReadSeeker = (*Blob)(nil)

// Size is the blob's plaintext size.
func (b *Blob) Size() int64 { return b.size }

// Read returns authenticated plaintext from the current position. A chunk
// that fails authentication ends the read with an error wrapping
// ErrIntegrity; the file is then evicted and the failure counted.
func (b *Blob) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.r == nil {
		if b.pos >= b.size {
			return 0, io.EOF
		}
		_, at := stream.Start(b.size, b.pos, b.content.Chunk())
		b.r = b.content.Reader(b.src(at), b.size, b.pos)
	}
	n, err := b.r.Read(p)
	b.pos += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		if errors.Is(err, stream.ErrCorrupt) {
			b.c.OnIntegrityFailure("edge-cache")
			b.c.mu.Lock()
			b.c.evictLocked(b.f, b.path)
			b.c.mu.Unlock()
			err = fmt.Errorf("%w: cached %s: %v; evicted", ErrIntegrity, b.digest, err)
		}
		b.err = err
	}
	return n, err
}

// Seek sets the position of the next Read.
func (b *Blob) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = b.pos + offset
	case io.SeekEnd:
		abs = b.size + offset
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if abs < 0 {
		return 0, errors.New("seek: negative position")
	}
	if abs != b.pos {
		b.pos, b.r = abs, nil
	}
	return abs, nil
}

// Err is the error that ended a read, if any.
func (b *Blob) Err() error { return b.err }

// Close releases the blob's file.
func (b *Blob) Close() error { return b.close() }

func removeFile(path string) error {
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
