package cache

import (
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
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/custody-dev/custody/libs/stream"
)

// fill is one fetch from the origin into a cache file, read by every
// client that asked for the blob meanwhile. The fill seals each chunk into
// a temporary file and then makes it readable (avail); readers
// authenticate what they read from that file like a hit's. The last chunk
// becomes readable only after the whole blob matched its size and digest
// and the file is renamed into place, so no client receives a whole blob
// whose digest failed.
type fill struct {
	ready chan struct{} // closed once the origin answered (size) or failed

	// Set before ready is closed, then read-only.
	size    int64
	content *stream.Cipher
	f       *os.File

	mu      sync.Mutex
	avail   int64         // sealed bytes readers may read
	changed chan struct{} // closed and replaced when avail or done change
	done    bool
	err     error
	refs    int // the fill itself and each reader; the file closes at 0

	purged bool // guarded by Cache.mu: do not cache the result
}

func (fl *fill) acquire() {
	fl.mu.Lock()
	fl.refs++
	fl.mu.Unlock()
}

func (fl *fill) release() {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.refs--
	if fl.refs == 0 && fl.f != nil {
		fl.f.Close()
	}
}

// publish makes n more sealed bytes readable, and ends the fill when done.
func (fl *fill) publish(n int64, done bool, err error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.avail += n
	fl.done, fl.err = done, err
	close(fl.changed)
	fl.changed = make(chan struct{})
}

// blob waits until the origin answered and returns a reader of the fill.
func (fl *fill) blob(ctx context.Context, c *Cache, digest, path string) (*Blob, error) {
	select {
	case <-fl.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if fl.content == nil { // the fill failed before the origin's size
		if err := fl.wait(ctx); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("fetch %s: the fill ended without a size", digest)
	}
	if stream.Chunks(fl.size, fl.content.Chunk()) == 1 {
		// A blob of one chunk has nothing to stream before its digest is
		// known: wait for it, and a failure is a clean error response.
		if err := fl.wait(ctx); err != nil {
			return nil, err
		}
	}
	fl.mu.Lock()
	failed := fl.done && fl.err != nil
	err := fl.err
	fl.mu.Unlock()
	if failed {
		return nil, err
	}
	return &Blob{c: c, f: fl.f, path: path, digest: digest, content: fl.content, size: fl.size,
		src:   func(at int64) io.Reader { return &fillReader{ctx: ctx, fl: fl, off: at} },
		close: func() error { fl.release(); return nil }}, nil
}

// wait waits for the fill to end and returns its error.
func (fl *fill) wait(ctx context.Context) error {
	for {
		fl.mu.Lock()
		done, err, changed := fl.done, fl.err, fl.changed
		fl.mu.Unlock()
		if done {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// fillReader reads a fill's sealed bytes from off, waiting for them.
type fillReader struct {
	ctx context.Context
	fl  *fill
	off int64
}

func (r *fillReader) Read(p []byte) (int, error) {
	for {
		r.fl.mu.Lock()
		avail, done, err, changed := r.fl.avail, r.fl.done, r.fl.err, r.fl.changed
		r.fl.mu.Unlock()
		if r.off < avail {
			n, err := r.fl.f.ReadAt(p[:min(int64(len(p)), avail-r.off)], int64(headerSize)+r.off)
			r.off += int64(n)
			if n > 0 && errors.Is(err, io.EOF) {
				err = nil
			}
			return n, err
		}
		if done {
			if err != nil {
				return 0, err
			}
			return 0, io.EOF
		}
		select {
		case <-changed:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

// startFill starts fetching a blob; c.mu is held. The fill outlives the
// request that started it (others may join), so it takes only that
// request's trace from ctx: its call to the origin is part of that trace.
func (c *Cache) startFill(ctx context.Context, digest, hexDigest string) *fill {
	sc := trace.SpanContextFromContext(ctx)
	fl := &fill{ready: make(chan struct{}), changed: make(chan struct{}), refs: 1}
	c.fills[hexDigest] = fl
	go func() {
		ctx, cancel := context.WithTimeout(trace.ContextWithSpanContext(context.Background(), sc), c.fillTimeout)
		defer cancel()
		err := c.fetch(ctx, fl, digest, hexDigest)
		if err == nil {
			return // fetch ended the fill
		}
		c.mu.Lock()
		delete(c.fills, hexDigest)
		c.dropFillLocked(hexDigest, fl)
		c.mu.Unlock()
		select {
		case <-fl.ready:
		default:
			close(fl.ready)
		}
		// The fill lets go of the blob before its readers learn that it
		// ended: a reader that saw the end and closed leaves it unused.
		fl.release()
		fl.publish(0, true, err)
	}()
	return fl
}

// fetch copies a blob from the origin into a cache file, checking its size
// and digest; only a blob that matches both is renamed into place and its
// last chunk released. On success it has ended the fill itself: released
// the fill's own reference, then published the end.
func (c *Cache) fetch(ctx context.Context, fl *fill, digest, hexDigest string) (err error) {
	// The stall timer runs from the start (the origin's first message
	// counts) and is reset by every byte the origin delivers.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(c.stallTimeout, func() { cancel(ErrStalled) })
	defer stall.Stop()
	defer func() {
		if err != nil && errors.Is(context.Cause(ctx), ErrStalled) {
			err = fmt.Errorf("%w: %s: the origin sent nothing for %s; aborted, nothing cached: try again or another edge", ErrStalled, digest, c.stallTimeout)
		}
	}()
	osrc, size, err := c.origin.Open(ctx, digest)
	if err != nil {
		if errors.Is(err, ErrIntegrity) {
			c.OnIntegrityFailure("origin")
		}
		return err
	}
	defer osrc.Close()
	stall.Reset(c.stallTimeout)
	src := &progressReader{r: osrc, progress: func() { stall.Reset(c.stallTimeout) }}
	originErr := func(format string, args ...any) error {
		c.OnIntegrityFailure("origin")
		return fmt.Errorf("%w for %s: the origin %s", ErrIntegrity, digest, fmt.Sprintf(format, args...))
	}
	if size < 0 || size > MaxSize {
		return originErr("claims a size of %d bytes", size)
	}
	h := header{size: size, chunk: c.chunk}
	if _, err := rand.Read(h.salt[:]); err != nil {
		return err
	}
	content, macKey, err := c.keys(&h, digest)
	if err != nil {
		return err
	}
	h.seal(macKey)
	c.mu.Lock()
	if err := c.reserveLocked(h.fileSize()); err != nil {
		c.mu.Unlock()
		return fmt.Errorf("cache %s: %w", digest, err)
	}
	c.addLocked(hexDigest, h.fileSize(), fl)
	c.mu.Unlock()
	tmp, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), "fetch-*")
	if err != nil {
		return err
	}
	renamed := false
	defer func() {
		if !renamed {
			os.Remove(tmp.Name())
		}
	}()
	fl.mu.Lock()
	fl.f = tmp // closed by the last release
	fl.mu.Unlock()
	if _, err := tmp.Write(h.marshal()); err != nil {
		return err
	}
	fl.size, fl.content = size, content
	close(fl.ready)

	sum := sha256.New()
	buf := make([]byte, c.chunk+stream.Overhead)
	chunks := stream.Chunks(size, c.chunk)
	var last int64
	for i := range chunks {
		n := int64(c.chunk)
		if i == chunks-1 {
			n = size - i*int64(c.chunk)
		}
		if _, err := io.ReadFull(src, buf[:n]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return originErr("sent fewer bytes than the %d it claimed", size)
			}
			if errors.Is(err, ErrIntegrity) {
				c.OnIntegrityFailure("origin")
			}
			return err
		}
		sum.Write(buf[:n])
		sealed := content.Seal(buf[:0], buf[:n], i, i == chunks-1)
		if _, err := tmp.Write(sealed); err != nil {
			return err
		}
		if i < chunks-1 {
			fl.publish(int64(len(sealed)), false, nil)
		} else {
			last = int64(len(sealed))
		}
	}
	// The origin's stream must end here, without an error.
	var one [1]byte
	switch k, err := io.ReadFull(src, one[:]); {
	case k > 0:
		return originErr("sent more bytes than the %d it claimed", size)
	case errors.Is(err, ErrIntegrity):
		c.OnIntegrityFailure("origin")
		return err
	case err != nil && !errors.Is(err, io.EOF):
		return err
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != hexDigest {
		return originErr("sent bytes hashing to sha256:%s", got)
	}
	// No fsync: the cache key lives only in memory, so a file that
	// survives a crash cannot be read after it anyway; the page cache
	// serves this process's readers. (Forcing the blob to disk doubled
	// the disk writes of a miss: the client fsyncs its own copy.)
	c.mu.Lock()
	if !fl.purged {
		if err := os.Rename(tmp.Name(), c.path(hexDigest)); err != nil {
			c.mu.Unlock()
			return err
		}
		renamed = true
		if e := c.entries[hexDigest]; e != nil && e.fill == fl {
			e.filling = false
		}
	} else {
		c.dropFillLocked(hexDigest, fl)
	}
	delete(c.fills, hexDigest)
	c.mu.Unlock()
	fl.release() // before the end is published, as on failure
	fl.publish(last, true, nil)
	return nil
}

// dropFillLocked forgets the entry of fill fl that did not become a cache
// file; c.mu is held.
func (c *Cache) dropFillLocked(hexDigest string, fl *fill) {
	if e := c.entries[hexDigest]; e != nil && e.fill == fl && e.filling {
		c.dropLocked(hexDigest)
	}
}

// progressReader calls progress after every read that delivered bytes.
type progressReader struct {
	r        io.Reader
	progress func()
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.progress()
	}
	return n, err
}
