package cache

import (
	"container/list"
	"errors"
	"fmt"
)

// ErrFull means the cache cannot make room for a blob: it is larger than
// the whole cache, or every cached blob that would have to go is being
// served or filled. The request fails (503) rather than evict a blob in use
// or exceed the bound; another edge, or a later request, may serve it.
var ErrFull = errors.New("edge cache full")

// entry is one blob's share of the cache: a cache file, or a fill's
// temporary file that becomes one. Guarded by Cache.mu.
type entry struct {
	hex  string
	size int64 // bytes on disk
	// readers are the open hits of the file.
	readers int
	// fill is set if the blob was fetched by this process: it is in use
	// while any of the fill's readers (or the fill itself) holds it.
	fill *fill
	// filling: the fill has not renamed its file into place yet.
	filling bool
	elem    *list.Element
}

func (e *entry) inUse() bool {
	if e.readers > 0 {
		return true
	}
	if e.fill != nil {
		e.fill.mu.Lock()
		defer e.fill.mu.Unlock()
		return e.fill.refs > 0
	}
	return false
}

// touchLocked makes e the most recently used; c.mu is held.
func (c *Cache) touchLocked(e *entry) { c.lru.MoveToFront(e.elem) }

// addLocked indexes a blob of size bytes as the most recently used,
// replacing any entry it had; c.mu is held.
func (c *Cache) addLocked(hexDigest string, size int64, fl *fill) *entry {
	c.dropLocked(hexDigest)
	e := &entry{hex: hexDigest, size: size, fill: fl, filling: fl != nil}
	e.elem = c.lru.PushFront(e)
	c.entries[hexDigest] = e
	c.used += size
	return e
}

// dropLocked forgets a blob's entry (its file is the caller's); c.mu is
// held.
func (c *Cache) dropLocked(hexDigest string) {
	if e := c.entries[hexDigest]; e != nil {
		c.lru.Remove(e.elem)
		delete(c.entries, hexDigest)
		c.used -= e.size
	}
}

// reserveLocked makes room for size more bytes by evicting the least
// recently used blobs that nobody is reading or filling, and fails with
// ErrFull if that is not enough; c.mu is held. Without a bound it always
// succeeds.
func (c *Cache) reserveLocked(size int64) error {
	if c.maxBytes <= 0 {
		return nil
	}
	if size > c.maxBytes {
		return fmt.Errorf("%w: a blob of %d bytes on disk is larger than the cache (%d bytes, --cache-max-bytes)", ErrFull, size, c.maxBytes)
	}
	for el := c.lru.Back(); el != nil && c.used+size > c.maxBytes; {
		e := el.Value.(*entry)
		prev := el.Prev()
		if !e.inUse() {
			c.dropLocked(e.hex)
			if !e.filling {
				_ = removeFile(c.path(e.hex))
			}
			c.evictions++
			c.OnEvict()
		}
		el = prev
	}
	if c.used+size > c.maxBytes {
		return fmt.Errorf("%w: %d of %d bytes are blobs being served or filled; try another edge", ErrFull, c.used, c.maxBytes)
	}
	return nil
}

// Used returns the bytes the cache holds or has reserved for fills, and
// the number of LRU evictions so far.
func (c *Cache) Used() (bytes int64, evictions int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used, c.evictions
}
