// Package local is the publisher's blob store on a local filesystem:
// content-addressed, written atomically, checked on every read.
package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/custody-dev/custody/libs/digest"
)

// Errors callers map to status codes.
var (
	ErrNotFound  = errors.New("blob not found")
	ErrIntegrity = errors.New("stored blob is corrupted")
	ErrInvalid   = errors.New("invalid digest")
	ErrTooLarge  = errors.New("blob larger than allowed")
)

// Store keeps blobs under dir/blobs/sha256/<2 hex>/<hex>. It is safe for
// concurrent use, also by several processes sharing dir: a blob appears
// whole or not at all.
type Store struct {
	dir string

	mu       sync.Mutex
	verified map[string]stamp // digest → file identity when last hashed good
}

type stamp struct {
	size, mtime, ctime int64
	ino                uint64
}

// Open prepares dir and removes temporary files left by a crash.
func Open(dir string) (*Store, error) {
	for _, d := range []string{"blobs/sha256", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("open blob store: %w", err)
		}
	}
	stale, _ := filepath.Glob(filepath.Join(dir, "tmp", "upload-*"))
	for _, f := range stale {
		os.Remove(f)
	}
	return &Store{dir: dir, verified: map[string]stamp{}}, nil
}

func (s *Store) path(hexDigest string) string {
	return filepath.Join(s.dir, "blobs", "sha256", hexDigest[:2], hexDigest)
}

// ParseDigest checks "sha256:<64 lowercase hex>" and returns the hex.
func ParseDigest(d string) (string, error) {
	h, err := digest.Parse(d)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return h, nil
}

// Put streams r into the store while hashing it, and returns its digest and
// size. At most maxSize bytes are read (more is ErrTooLarge). The blob is
// fsynced and linked into place only when complete; on any error nothing is
// left behind.
func (s *Store) Put(r io.Reader, maxSize int64) (string, int64, error) {
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "upload-*")
	if err != nil {
		return "", 0, fmt.Errorf("store blob: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	n, err := io.CopyBuffer(io.MultiWriter(tmp, h), io.LimitReader(r, maxSize+1), buf)
	if err != nil {
		return "", 0, fmt.Errorf("store blob: %w", err)
	}
	if n > maxSize {
		return "", 0, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, maxSize)
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("store blob: fsync: %w", err)
	}
	hexDigest := hex.EncodeToString(h.Sum(nil))
	final := s.path(hexDigest)
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return "", 0, fmt.Errorf("store blob: %w", err)
	}
	// link is an atomic create-if-absent: a blob already there has the same
	// content (it is named by its hash) unless it rotted, which Verify and
	// reads detect.
	if err := os.Link(tmp.Name(), final); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", 0, fmt.Errorf("store blob: %w", err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return "", 0, fmt.Errorf("store blob: %w", err)
	}
	return digest.Prefix + hexDigest, n, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Open returns a reader of the blob from byte offset on, and the whole
// blob's size. A read from offset 0 returns an error wrapping ErrIntegrity
// at the end if the bytes do not hash to the digest or are longer than the
// size seen at open; a read from a later offset cannot be checked here and
// is checked by its reader. An offset outside [0, size] wraps ErrInvalid.
func (s *Store) Open(ctx context.Context, digest string, offset int64) (io.ReadCloser, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	h, err := ParseDigest(digest)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(s.path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, digest)
	}
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	size := fi.Size()
	if offset < 0 || offset > size {
		f.Close()
		return nil, 0, fmt.Errorf("%w: offset %d outside the blob's %d bytes", ErrInvalid, offset, size)
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, 0, err
		}
		return f, size, nil
	}
	return &checked{f: f, h: sha256.New(), want: h, digest: digest, left: size}, size, nil
}

type checked struct {
	f      *os.File
	h      hash.Hash
	want   string
	digest string
	left   int64
}

func (c *checked) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	c.h.Write(p[:n])
	c.left -= int64(n)
	if c.left < 0 {
		return n, fmt.Errorf("%w: %s grew while being read", ErrIntegrity, c.digest)
	}
	if errors.Is(err, io.EOF) {
		if got := hex.EncodeToString(c.h.Sum(nil)); got != c.want || c.left != 0 {
			return n, fmt.Errorf("%w: %s: its bytes hash to sha256:%s", ErrIntegrity, c.digest, got)
		}
	}
	return n, err
}

func (c *checked) Close() error { return c.f.Close() }

// Verify re-hashes the blob unless the file is unchanged since it was last
// found good (same size, mtime, ctime and inode; ctime cannot be set from
// user space), and returns its size.
func (s *Store) Verify(digest string) (int64, error) {
	h, err := ParseDigest(digest)
	if err != nil {
		return 0, err
	}
	st, err := statOf(s.path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("%w: %s", ErrNotFound, digest)
	}
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	good := s.verified[digest] == st
	s.mu.Unlock()
	if good {
		return st.size, nil
	}
	r, size, err := s.Open(context.Background(), digest, 0)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	if _, err := io.CopyBuffer(io.Discard, r, make([]byte, 1<<20)); err != nil {
		s.mu.Lock()
		delete(s.verified, digest)
		s.mu.Unlock()
		return 0, err
	}
	s.mu.Lock()
	s.verified[digest] = st
	s.mu.Unlock()
	return size, nil
}

func statOf(path string) (stamp, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return stamp{}, fs.ErrNotExist
		}
		return stamp{}, err
	}
	return stamp{size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(), ino: st.Ino}, nil
}
