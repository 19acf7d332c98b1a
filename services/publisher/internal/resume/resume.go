// Package resume keeps the bytes of interrupted uploads so that their
// builder can send only the rest: one file per (caller, upload id), for a
// bounded time, at most a few per caller.
package resume

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
	"slices"
	"strings"
	"sync"
	"time"
)

// Errors the gRPC layer maps to status codes.
var (
	// ErrNotFound: no partial upload of that id for that caller (never
	// started, finished, expired or evicted): upload from offset 0.
	ErrNotFound = errors.New("no interrupted upload to resume")
	// ErrInvalid: a malformed id or an offset the partial does not cover.
	ErrInvalid = errors.New("invalid resume")
)

// Config configures Open.
type Config struct {
	Dir string
	// TTL is how long an interrupted upload is kept after its last byte.
	TTL time.Duration
	// MaxPerCaller bounds the interrupted uploads kept for one caller; a new
	// upload beyond it evicts that caller's oldest.
	MaxPerCaller int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Store is the set of partial uploads on disk. The files are the state (a
// restart keeps them, with their age); memory holds only which are being
// written, so that a resumed stream can take over from one the publisher has
// not yet seen die. It is safe for concurrent use.
type Store struct {
	cfg    Config
	mu     sync.Mutex
	active map[string]*holder // file name → the stream writing it
}

type holder struct {
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// Open prepares cfg.Dir.
func Open(cfg Config) (*Store, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open partial uploads: %w", err)
	}
	return &Store{cfg: cfg, active: map[string]*holder{}}, nil
}

// ValidID reports whether id is an acceptable upload id: 16 to 64 letters,
// digits, '-' or '_'.
func ValidID(id string) bool {
	if len(id) < 16 || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func callerPrefix(caller string) string {
	sum := sha256.Sum256([]byte(caller))
	return hex.EncodeToString(sum[:8])
}

// name is the file of (caller, id): the caller's prefix lets the store
// count a caller's files; the hash keeps ids of one caller from naming
// another's.
func name(caller, id string) string {
	sum := sha256.Sum256([]byte(caller + "\x00" + id))
	return callerPrefix(caller) + "-" + hex.EncodeToString(sum[:])
}

// Upload is one stream writing a partial upload. Its methods are for one
// goroutine; exactly one of Suspend or Discard must be called.
type Upload struct {
	s    *Store
	name string
	h    *holder
	f    *os.File
	sum  hash.Hash
	size int64
}

// Begin starts (offset 0) or resumes (offset > 0) caller's upload id; with
// hash, Digest reports the SHA-256 of the bytes held (always so when
// resuming). A
// stream still writing that upload is stopped first (its Stop channel
// closes) and Begin waits for it to let go. Starting anew discards earlier
// bytes of the id. Resuming truncates the partial to offset and rebuilds the
// hash by reading it back, so the result is exactly the first offset bytes
// sent plus what follows.
func (s *Store) Begin(ctx context.Context, caller, id string, offset int64, hash bool) (*Upload, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%w: upload id %q: want 16-64 letters, digits, '-' or '_'", ErrInvalid, id)
	}
	if offset < 0 {
		return nil, fmt.Errorf("%w: offset %d", ErrInvalid, offset)
	}
	n := name(caller, id)
	h, err := s.takeOver(ctx, n)
	if err != nil {
		return nil, err
	}
	u := &Upload{s: s, name: n, h: h, size: offset}
	if hash || offset > 0 {
		u.sum = sha256.New()
	}
	if err := u.open(offset); err != nil {
		s.release(n, h)
		return nil, err
	}
	return u, nil
}

func (s *Store) takeOver(ctx context.Context, n string) (*holder, error) {
	for {
		s.mu.Lock()
		old := s.active[n]
		if old == nil {
			h := &holder{stop: make(chan struct{}), done: make(chan struct{})}
			s.active[n] = h
			s.mu.Unlock()
			return h, nil
		}
		s.mu.Unlock()
		old.stopOnce.Do(func() { close(old.stop) })
		select {
		case <-old.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *Store) release(n string, h *holder) {
	s.mu.Lock()
	if s.active[n] == h {
		delete(s.active, n)
	}
	s.mu.Unlock()
	close(h.done)
}

func (s *Store) path(n string) string { return filepath.Join(s.cfg.Dir, n) }

func (u *Upload) open(offset int64) error {
	p := u.s.path(u.name)
	if offset == 0 {
		u.s.evict(u.name)
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("start partial upload: %w", err)
		}
		u.f = f
		return nil
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) || err == nil && u.s.expired(fi) {
		os.Remove(p)
		return fmt.Errorf("%w: upload from offset 0", ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("resume upload: %w", err)
	}
	if fi.Size() < offset {
		return fmt.Errorf("%w: offset %d, but the publisher holds %d bytes: resume from GetUploadStatus's offset", ErrInvalid, offset, fi.Size())
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("resume upload: %w", err)
	}
	if err := f.Truncate(offset); err != nil {
		f.Close()
		return fmt.Errorf("resume upload: %w", err)
	}
	if _, err := io.CopyBuffer(u.sum, io.NewSectionReader(f, 0, offset), make([]byte, 1<<20)); err != nil {
		f.Close()
		return fmt.Errorf("resume upload: rehash: %w", err)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return fmt.Errorf("resume upload: %w", err)
	}
	u.f = f
	return nil
}

func (s *Store) expired(fi fs.FileInfo) bool {
	return s.cfg.Now().After(fi.ModTime().Add(s.cfg.TTL))
}

// evict removes the oldest idle partials of keep's caller so that, with
// keep, at most MaxPerCaller remain.
func (s *Store) evict(keep string) {
	prefix, _, _ := strings.Cut(keep, "-")
	entries, _ := os.ReadDir(s.cfg.Dir)
	type file struct {
		name string
		mod  time.Time
	}
	var idle []file
	s.mu.Lock()
	defer s.mu.Unlock()
	mine := 0
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix+"-") || e.Name() == keep {
			continue
		}
		mine++
		if fi, err := e.Info(); err == nil && s.active[e.Name()] == nil {
			idle = append(idle, file{e.Name(), fi.ModTime()})
		}
	}
	slices.SortFunc(idle, func(a, b file) int { return a.mod.Compare(b.mod) })
	for _, f := range idle {
		if mine < s.cfg.MaxPerCaller {
			break
		}
		os.Remove(s.path(f.name))
		mine--
	}
}

// Write appends p to the partial upload and its hash.
func (u *Upload) Write(p []byte) (int, error) {
	n, err := u.f.Write(p)
	if u.sum != nil {
		u.sum.Write(p[:n])
	}
	u.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("write partial upload: %w", err)
	}
	return n, nil
}

// Size returns the bytes held so far, from offset 0.
func (u *Upload) Size() int64 { return u.size }

// Digest returns "sha256:<hex>" of the bytes held so far, or "" if Begin
// was asked not to hash.
func (u *Upload) Digest() string {
	if u.sum == nil {
		return ""
	}
	return "sha256:" + hex.EncodeToString(u.sum.Sum(nil))
}

// Stop closes when a newer stream resumes this upload: stop writing and let
// go (Suspend).
func (u *Upload) Stop() <-chan struct{} { return u.h.stop }

// Bytes returns a reader of everything held, for handing to the blob store.
func (u *Upload) Bytes() io.Reader { return io.NewSectionReader(u.f, 0, u.size) }

// Suspend keeps the bytes for a resume within the TTL and lets go.
func (u *Upload) Suspend() {
	u.f.Close()
	u.s.release(u.name, u.h)
}

// Discard removes the bytes and lets go.
func (u *Upload) Discard() {
	u.f.Close()
	os.Remove(u.s.path(u.name))
	u.s.release(u.name, u.h)
}

// Status returns how many bytes of caller's upload id are held, or
// ErrNotFound.
func (s *Store) Status(caller, id string) (int64, error) {
	if !ValidID(id) {
		return 0, fmt.Errorf("%w: upload id %q: want 16-64 letters, digits, '-' or '_'", ErrInvalid, id)
	}
	fi, err := os.Stat(s.path(name(caller, id)))
	if errors.Is(err, fs.ErrNotExist) || err == nil && s.expired(fi) {
		return 0, fmt.Errorf("%w: upload from offset 0", ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("upload status: %w", err)
	}
	return fi.Size(), nil
}

// Sweep removes the idle partial uploads older than the TTL and returns how
// many it removed.
func (s *Store) Sweep() int {
	entries, _ := os.ReadDir(s.cfg.Dir)
	removed := 0
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !s.expired(fi) {
			continue
		}
		s.mu.Lock()
		if s.active[e.Name()] == nil && os.Remove(s.path(e.Name())) == nil {
			removed++
		}
		s.mu.Unlock()
	}
	return removed
}

// Run sweeps every interval until ctx is done.
func (s *Store) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.Sweep()
		}
	}
}
