// Package resume keeps the bytes of interrupted uploads so that their
// builder can send only the rest: one file per (caller, upload id), for a
// bounded time, at most a few per caller.
//
// Partial files are encrypted like blobs: a fresh data key per upload,
// wrapped by the store's KEK in the file's header, and the bytes in
// AES-256-GCM records of partChunk bytes, each under a random nonce with the
// file's name and the record's index as associated data. No plaintext byte
// of an upload reaches the disk; at most one record's worth is in memory.
package resume

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
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
	"sync/atomic"
	"time"

	"github.com/custody-dev/custody/services/publisher/internal/kek"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
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
	// KEK wraps each partial file's data key (required).
	KEK Wrapper
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
	// held is the upload's plaintext size while it is written, its
	// unsealed tail included (Suspend seals it).
	held atomic.Int64
}

// Wrapper is what partial files need from a KEK back end.
type Wrapper interface {
	Wrap(ctx context.Context, dataKey []byte) (string, error)
	Unwrap(ctx context.Context, wrapped string) ([]byte, error)
}

// Open prepares cfg.Dir.
func Open(cfg Config) (*Store, error) {
	if cfg.KEK == nil {
		return nil, errors.New("open partial uploads: a KEK is required: partial uploads are encrypted at rest")
	}
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
	size int64 // plaintext held, buf included

	aead   cipher.AEAD
	header int64  // bytes of the file's header
	index  int64  // records on disk
	buf    []byte // plaintext after the last record, less than partChunk
	rec    []byte // one sealed record
}

// Partial file layout: magic, 2-byte length and the wrapped key, then
// records of nonce ‖ GCM(plaintext of partChunk bytes; the last may be
// shorter).
const (
	partMagic    = "custody partial v1\n"
	partChunk    = 64 << 10
	nonceSize    = 12
	recOverhead  = nonceSize + 16
	fullRecord   = partChunk + recOverhead
	maxWrapped   = 4096
	partKeyBytes = 32
)

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
	if err := u.open(ctx, offset); err != nil {
		s.release(n, h)
		return nil, err
	}
	h.held.Store(u.size)
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

func (u *Upload) open(ctx context.Context, offset int64) error {
	p := u.s.path(u.name)
	u.rec = make([]byte, fullRecord)
	if offset == 0 {
		u.s.evict(u.name)
		dk := make([]byte, partKeyBytes)
		rand.Read(dk)
		defer clear(dk)
		wrapped, err := u.s.cfg.KEK.Wrap(ctx, dk)
		if err != nil {
			return kekErr("start partial upload", err)
		}
		if u.aead, err = newAEAD(dk); err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("start partial upload: %w", err)
		}
		hdr := append([]byte(partMagic), 0, 0)
		binary.BigEndian.PutUint16(hdr[len(partMagic):], uint16(len(wrapped)))
		hdr = append(hdr, wrapped...)
		if _, err := f.Write(hdr); err != nil {
			f.Close()
			os.Remove(p)
			return fmt.Errorf("start partial upload: %w", err)
		}
		u.f, u.header = f, int64(len(hdr))
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
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("resume upload: %w", err)
	}
	if err := u.reopen(ctx, f, fi.Size(), offset); err != nil {
		f.Close()
		return err
	}
	u.f = f
	return nil
}

// reopen unwraps the key of an existing partial, decrypts and rehashes its
// first offset bytes, and truncates it to the last whole record before
// offset, keeping the rest of offset in buf.
func (u *Upload) reopen(ctx context.Context, f *os.File, size, offset int64) error {
	wrapped, header, err := readHeader(f)
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("%w: the partial upload is damaged (%v): upload from offset 0", ErrNotFound, err)
	}
	dk, err := u.s.cfg.KEK.Unwrap(ctx, wrapped)
	if errors.Is(err, kek.ErrUnwrap) {
		os.Remove(f.Name())
		return fmt.Errorf("%w: the partial upload's key cannot be unwrapped (%v): upload from offset 0", ErrNotFound, err)
	}
	if err != nil {
		return kekErr("resume upload", err)
	}
	defer clear(dk)
	if u.aead, err = newAEAD(dk); err != nil {
		return err
	}
	u.header = header
	held := plainSize(size - header)
	if held < offset {
		return fmt.Errorf("%w: offset %d, but the publisher holds %d bytes: resume from GetUploadStatus's offset", ErrInvalid, offset, held)
	}
	keep := offset / partChunk // whole records kept on disk
	r := io.NewSectionReader(f, header, size-header)
	plain := make([]byte, 0, partChunk)
	for i := int64(0); i*partChunk < offset; i++ {
		n, _ := io.ReadFull(r, u.rec[:min(fullRecord, size-header-i*fullRecord)])
		pt, err := u.aead.Open(plain[:0], u.rec[:nonceSize], u.rec[nonceSize:n], u.aad(i))
		if err != nil {
			// A torn last record (a crash while writing it) or tampering:
			// keep what authenticates.
			if terr := f.Truncate(header + i*fullRecord); terr != nil {
				return fmt.Errorf("resume upload: %w", terr)
			}
			return fmt.Errorf("%w: offset %d, but the publisher holds %d authentic bytes: resume from GetUploadStatus's offset", ErrInvalid, offset, i*partChunk)
		}
		want := min(int64(len(pt)), offset-i*partChunk)
		u.sum.Write(pt[:want])
		if i == keep {
			u.buf = append(make([]byte, 0, partChunk), pt[:want]...)
		}
	}
	if u.buf == nil {
		u.buf = make([]byte, 0, partChunk)
	}
	clear(plain[:cap(plain)])
	if err := f.Truncate(header + keep*fullRecord); err != nil {
		return fmt.Errorf("resume upload: %w", err)
	}
	if _, err := f.Seek(header+keep*fullRecord, io.SeekStart); err != nil {
		return fmt.Errorf("resume upload: %w", err)
	}
	u.index = keep
	return nil
}

func kekErr(op string, err error) error {
	if errors.Is(err, kek.ErrUnavailable) {
		return fmt.Errorf("%w: %s: %v", sealed.ErrUnavailable, op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func newAEAD(dk []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(dk)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// aad binds a record to its file (so to its caller and upload id) and its
// place in it.
func (u *Upload) aad(i int64) []byte {
	b := make([]byte, 0, len(u.name)+8)
	b = append(b, u.name...)
	return binary.BigEndian.AppendUint64(b, uint64(i))
}

// readHeader returns a partial file's wrapped key and header length.
func readHeader(f *os.File) (string, int64, error) {
	hdr := make([]byte, len(partMagic)+2)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return "", 0, errors.New("short header")
	}
	if string(hdr[:len(partMagic)]) != partMagic {
		return "", 0, errors.New("not a partial upload")
	}
	n := int(binary.BigEndian.Uint16(hdr[len(partMagic):]))
	if n == 0 || n > maxWrapped {
		return "", 0, fmt.Errorf("wrapped key of %d bytes", n)
	}
	w := make([]byte, n)
	if _, err := f.ReadAt(w, int64(len(hdr))); err != nil {
		return "", 0, errors.New("short header")
	}
	return string(w), int64(len(hdr) + n), nil
}

// plainSize is the plaintext a partial's records of payload bytes hold.
func plainSize(payload int64) int64 {
	if payload <= 0 {
		return 0
	}
	full, rem := payload/fullRecord, payload%fullRecord
	return full*partChunk + max(0, rem-recOverhead)
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

// Write appends p to the partial upload and its hash. Bytes reach the
// disk sealed, a whole record at a time.
func (u *Upload) Write(p []byte) (int, error) {
	if u.buf == nil {
		u.buf = make([]byte, 0, partChunk)
	}
	n := 0
	for len(p) > 0 {
		k := min(len(p), partChunk-len(u.buf))
		u.buf = append(u.buf, p[:k]...)
		if u.sum != nil {
			u.sum.Write(p[:k])
		}
		u.size += int64(k)
		u.h.held.Store(u.size)
		n += k
		p = p[k:]
		if len(u.buf) == partChunk {
			if err := u.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// flush seals buf as the next record.
func (u *Upload) flush() error {
	if len(u.buf) == 0 {
		return nil
	}
	nonce := u.rec[:nonceSize]
	rand.Read(nonce)
	rec := u.aead.Seal(u.rec[:nonceSize], nonce, u.buf, u.aad(u.index))
	clear(u.buf)
	u.buf = u.buf[:0]
	if _, err := u.f.Write(rec); err != nil {
		return fmt.Errorf("write partial upload: %w", err)
	}
	u.index++
	return nil
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

// Bytes returns a reader of everything held, for handing to the blob store:
// the records decrypted one at a time, then the bytes not yet sealed.
func (u *Upload) Bytes() io.Reader {
	return io.MultiReader(&opener{u: u, r: io.NewSectionReader(u.f, u.header, u.index*fullRecord)}, bytes.NewReader(u.buf))
}

// opener decrypts a partial's records.
type opener struct {
	u   *Upload
	r   io.Reader
	i   int64
	out []byte
	rec []byte
}

func (o *opener) Read(p []byte) (int, error) {
	for len(o.out) == 0 {
		if o.i == o.u.index {
			return 0, io.EOF
		}
		if o.rec == nil {
			o.rec = make([]byte, fullRecord)
		}
		if _, err := io.ReadFull(o.r, o.rec); err != nil {
			return 0, fmt.Errorf("read partial upload: record %d: %w", o.i, err)
		}
		pt, err := o.u.aead.Open(o.rec[nonceSize:nonceSize], o.rec[:nonceSize], o.rec[nonceSize:], o.u.aad(o.i))
		if err != nil {
			return 0, fmt.Errorf("%w: partial upload record %d fails authentication: upload again from offset 0", ErrInvalid, o.i)
		}
		o.out = pt
		o.i++
	}
	n := copy(p, o.out)
	o.out = o.out[n:]
	return n, nil
}

// Suspend keeps the bytes for a resume within the TTL and lets go; the
// bytes not yet sealed are sealed as a short last record.
func (u *Upload) Suspend() {
	u.flush()
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
	n := name(caller, id)
	s.mu.Lock()
	h := s.active[n]
	s.mu.Unlock()
	if h != nil {
		// Being written: what a resume now would find once the stream
		// it takes over lets go.
		return h.held.Load(), nil
	}
	fi, err := os.Stat(s.path(n))
	if errors.Is(err, fs.ErrNotExist) || err == nil && s.expired(fi) {
		return 0, fmt.Errorf("%w: upload from offset 0", ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("upload status: %w", err)
	}
	f, err := os.Open(s.path(n))
	if err != nil {
		return 0, fmt.Errorf("%w: upload from offset 0", ErrNotFound)
	}
	defer f.Close()
	_, header, err := readHeader(f)
	if err != nil {
		return 0, fmt.Errorf("%w: the partial upload is damaged (%v): upload from offset 0", ErrNotFound, err)
	}
	return plainSize(fi.Size() - header), nil
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
