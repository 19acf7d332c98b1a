// Package cache is the edge's content cache: blobs named by digest, fetched
// from the origin on a miss, stored only when their bytes match the digest,
// and re-checked before they are served.
package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sync/singleflight"
)

// Errors callers map to HTTP statuses.
var (
	ErrNotFound  = errors.New("not found at the origin")
	ErrIntegrity = errors.New("integrity failure")
)

// Origin fetches blob bytes into w.
type Origin interface {
	Fetch(ctx context.Context, digest string, w io.Writer) error
}

// Cache stores verified blobs under dir. It is safe for concurrent use;
// concurrent misses for one digest fetch it once.
type Cache struct {
	dir    string
	origin Origin
	group  singleflight.Group
	// OnIntegrityFailure is called with where bytes failed ("origin" or
	// "edge-cache"), for metrics.
	OnIntegrityFailure func(where string)
}

// New returns a cache in dir backed by origin, removing temporary files a
// crash left.
func New(dir string, origin Origin) (*Cache, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, err
	}
	stale, _ := filepath.Glob(filepath.Join(dir, "tmp", "fetch-*"))
	for _, f := range stale {
		os.Remove(f)
	}
	return &Cache{dir: dir, origin: origin, OnIntegrityFailure: func(string) {}}, nil
}

func (c *Cache) path(hexDigest string) string { return filepath.Join(c.dir, "sha256-"+hexDigest) }

// Open returns the verified cached blob for "sha256:<hex>", fetching it
// from the origin on a miss, and whether it was in the cache (hit). A
// cached file that no longer matches its digest is evicted and fetched
// again, never served.
func (c *Cache) Open(ctx context.Context, digest, hexDigest string) (*os.File, bool, error) {
	if f, err := c.openVerified(digest, hexDigest); err == nil {
		return f, true, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	_, err, _ := c.group.Do(hexDigest, func() (any, error) {
		return nil, c.fetch(context.WithoutCancel(ctx), digest, hexDigest)
	})
	if err != nil {
		return nil, false, err
	}
	f, err := c.openVerified(digest, hexDigest)
	return f, false, err
}

// openVerified opens the cached file after hashing it; a mismatch evicts it
// and reports fs.ErrNotExist so the caller fetches again.
func (c *Cache) openVerified(digest, hexDigest string) (*os.File, error) {
	f, err := os.Open(c.path(hexDigest))
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		f.Close()
		return nil, err
	}
	if hex.EncodeToString(h.Sum(nil)) != hexDigest {
		f.Close()
		c.OnIntegrityFailure("edge-cache")
		os.Remove(c.path(hexDigest))
		return nil, fmt.Errorf("cached %s was corrupted and is evicted: %w", digest, fs.ErrNotExist)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (c *Cache) fetch(ctx context.Context, digest, hexDigest string) error {
	tmp, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), "fetch-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	if err := c.origin.Fetch(ctx, digest, io.MultiWriter(tmp, h)); err != nil {
		if errors.Is(err, ErrIntegrity) {
			c.OnIntegrityFailure("origin")
		}
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != hexDigest {
		c.OnIntegrityFailure("origin")
		return fmt.Errorf("%w for %s: the origin sent bytes hashing to sha256:%s", ErrIntegrity, digest, got)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), c.path(hexDigest))
}

// Purge drops a digest from the cache and reports whether it was there.
func (c *Cache) Purge(hexDigest string) (bool, error) {
	err := os.Remove(c.path(hexDigest))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// PurgeAll drops every cached blob and returns how many it dropped; used
// when the kill switch goes on. It continues past errors and returns them
// joined.
func (c *Cache) PurgeAll() (int, error) {
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
