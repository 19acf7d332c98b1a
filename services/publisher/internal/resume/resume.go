// Package resume keeps the bytes of interrupted uploads so that their
// builder can send only the rest: one file per (caller, upload id), for a
// bounded time, at most a few per caller.
//
// Partial files are sealed as blobs are, as the bytes arrive: a fresh blob
// data key per upload, wrapped by the store's KEK, and the bytes in the
// store's chunked AES-256-GCM format, so that a finished upload is stored
// without being decrypted, re-hashed, re-sealed or copied (see Upload's
// file layout). No plaintext byte of an upload reaches the disk; at most
// one chunk's worth is in memory.
package resume

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
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

	"github.com/custody-dev/custody/libs/stream"
	"github.com/custody-dev/custody/services/publisher/internal/directio"
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
// goroutine; exactly one of Suspend or Discard must be called (after Finish
// too).
type Upload struct {
	s    *Store
	name string
	h    *holder
	f    *os.File // the chunks
	// w writes the chunks after those f held when this stream began, in
	// blocks that reach the disk directly (decision 0127); nil before the
	// first and after flush.
	w    *directio.Writer
	sum  hash.Hash
	size int64 // plaintext held, buf included

	dk      []byte // the blob's data key, wrapped in the key file
	wrapped string
	content *stream.Cipher
	tail    cipher.AEAD
	bindKey []byte
	index   int64  // chunks in f
	buf     []byte // plaintext after them, at most one chunk
	rec     []byte // one sealed chunk
	// While size < verifyEnd the stream resends bytes the file already
	// holds sealed (a resume from an earlier offset): they are compared
	// with the held plaintext, never sealed again under the same nonce.
	verifyEnd int64
	cmp       []byte // plaintext of chunk cmpIndex
	cmpIndex  int64
}

// Partial upload files. The bytes are sealed as they arrive in the blob
// store's own content format (libs/stream chunks under the content key of
// a fresh blob data key, sealed.ContentCipher), so a finished upload
// becomes the blob's ciphertext object as it is (sealed.PutSealed):
//
//	<name>       the chunks, each sealed once a later byte shows it is not
//	             the last (the last is sealed by Finish)
//	<name>.key   magic, chunk size, the data key wrapped by the store's KEK,
//	             and a MAC of the file name under a key derived from it, so
//	             that another upload's files put in this one's place do not
//	             resume
//	<name>.tail  written when a stream stops: the bytes after the last
//	             chunk (up to one chunk), as index ‖ nonce ‖ AES-256-GCM
//	             under a key derived for it, with the file name and index
//	             as associated data, under a random nonce
const (
	keyMagic   = "custody partial v2\n"
	keySuffix  = ".key"
	tailSuffix = ".tail"
	maxWrapped = 4096
	nonceSize  = 12
	tailHeader = 8 + nonceSize
)

// chunk is the plaintext size of a partial's chunks (the store's).
const chunk = sealed.DefaultChunk

const fullChunk = chunk + stream.Overhead

// Begin starts (offset 0) or resumes (offset > 0) caller's upload id;
// Digest reports the SHA-256 of the bytes held. A stream still writing that
// upload is stopped first (its Stop channel closes) and Begin waits for it
// to let go. Starting anew discards earlier bytes of the id. Resuming
// authenticates the chunks held and rebuilds the hash by reading them back,
// so the result is exactly the first offset bytes sent plus what follows.
func (s *Store) Begin(ctx context.Context, caller, id string, offset int64) (*Upload, error) {
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
	u := &Upload{s: s, name: n, h: h, size: offset, sum: sha256.New(), cmpIndex: -1}
	if err := u.open(ctx, offset); err != nil {
		clear(u.dk)
		s.release(n, h)
		return nil, err
	}
	h.held.Store(u.held())
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

// remove deletes every file of partial n.
func (s *Store) remove(n string) {
	for _, suffix := range []string{"", keySuffix, tailSuffix} {
		os.Remove(s.path(n) + suffix)
	}
}

func (u *Upload) keys(dk []byte) error {
	var err error
	if u.content, err = sealed.ContentCipher(dk, chunk); err != nil {
		return err
	}
	tk, err := hkdf.Key(sha256.New, dk, nil, "custody partial tail v1", 32)
	if err != nil {
		return err
	}
	u.tail, err = newAEAD(tk)
	clear(tk)
	if err != nil {
		return err
	}
	u.bindKey, err = hkdf.Key(sha256.New, dk, nil, "custody partial name v1", 32)
	u.dk = dk
	return err
}

func (u *Upload) open(ctx context.Context, offset int64) error {
	p := u.s.path(u.name)
	u.rec = make([]byte, fullChunk)
	u.buf = make([]byte, 0, chunk)
	if offset == 0 {
		u.s.evict(u.name)
		u.s.remove(u.name)
		dk := make([]byte, sealed.DataKeySize)
		rand.Read(dk)
		wrapped, err := u.s.cfg.KEK.Wrap(ctx, dk)
		if err != nil {
			clear(dk)
			return kekErr("start partial upload", err)
		}
		if err := u.keys(dk); err != nil {
			return err
		}
		u.wrapped = wrapped
		hdr := append([]byte(keyMagic), 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint32(hdr[len(keyMagic):], chunk)
		binary.BigEndian.PutUint16(hdr[len(keyMagic)+4:], uint16(len(wrapped)))
		hdr = append(hdr, wrapped...)
		hdr = append(hdr, u.binding()...)
		if err := os.WriteFile(p+keySuffix, hdr, 0o600); err != nil {
			u.s.remove(u.name)
			return fmt.Errorf("start partial upload: %w", err)
		}
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			u.s.remove(u.name)
			return fmt.Errorf("start partial upload: %w", err)
		}
		u.f = f
		return nil
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) || err == nil && u.s.expired(fi) {
		u.s.remove(u.name)
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

// reopen unwraps the key of an existing partial, authenticates and rehashes
// its first offset bytes, drops a torn chunk and takes the tail back into
// memory.
func (u *Upload) reopen(ctx context.Context, f *os.File, size, offset int64) error {
	wrapped, mac, err := readKey(f.Name() + keySuffix)
	if err != nil {
		u.s.remove(u.name)
		return fmt.Errorf("%w: the partial upload is damaged (%v): upload from offset 0", ErrNotFound, err)
	}
	dk, err := u.s.cfg.KEK.Unwrap(ctx, wrapped)
	if errors.Is(err, kek.ErrUnwrap) {
		u.s.remove(u.name)
		return fmt.Errorf("%w: the partial upload's key cannot be unwrapped (%v): upload from offset 0", ErrNotFound, err)
	}
	if err != nil {
		return kekErr("resume upload", err)
	}
	if len(dk) != sealed.DataKeySize {
		clear(dk)
		u.s.remove(u.name)
		return fmt.Errorf("%w: the partial upload's key has %d bytes: upload from offset 0", ErrNotFound, len(dk))
	}
	if err := u.keys(dk); err != nil {
		return err
	}
	if !hmac.Equal(mac, u.binding()) {
		return fmt.Errorf("%w: the partial upload's files are not this upload's: resume from GetUploadStatus's offset, or upload from offset 0", ErrInvalid)
	}
	u.wrapped = wrapped
	k := size / fullChunk // whole chunks; a torn one after them is dropped
	tail := u.readTail(k)
	os.Remove(f.Name() + tailSuffix) // in memory now; Suspend writes it again
	held := k*chunk + int64(len(tail))
	if held < offset {
		f.Truncate(k * fullChunk)
		u.writeTail(k, tail) // keep it for a resume from the right offset
		return fmt.Errorf("%w: offset %d, but the publisher holds %d bytes: resume from GetUploadStatus's offset", ErrInvalid, offset, held)
	}
	// Rehash the first offset bytes, authenticating every chunk they
	// touch; keep what authenticates.
	for i := int64(0); i < k && i*chunk < offset; i++ {
		pt, err := u.readChunk(f, i)
		if err != nil {
			// A torn chunk (a crash while writing it) or tampering.
			if terr := f.Truncate(i * fullChunk); terr != nil {
				return fmt.Errorf("resume upload: %w", terr)
			}
			return fmt.Errorf("%w: offset %d, but the publisher holds %d authentic bytes: resume from GetUploadStatus's offset", ErrInvalid, offset, i*chunk)
		}
		u.sum.Write(pt[:min(int64(len(pt)), offset-i*chunk)])
	}
	if err := f.Truncate(k * fullChunk); err != nil {
		return fmt.Errorf("resume upload: %w", err)
	}
	u.index = k
	if offset >= k*chunk {
		u.buf = append(u.buf, tail[:offset-k*chunk]...)
		u.sum.Write(u.buf)
	} else {
		u.verifyEnd = k * chunk
	}
	clear(tail)
	return nil
}

// readChunk authenticates chunk i of f, which is not the last, into cmp.
func (u *Upload) readChunk(f *os.File, i int64) ([]byte, error) {
	if _, err := f.ReadAt(u.rec, i*fullChunk); err != nil {
		return nil, err
	}
	if u.cmp == nil {
		u.cmp = make([]byte, 0, fullChunk)
	}
	pt, err := u.content.Open(u.cmp[:0], u.rec, i, false)
	if err != nil {
		u.cmpIndex = -1
		return nil, err
	}
	u.cmpIndex = i
	return pt, nil
}

// binding is the MAC of the partial's name under its data key.
func (u *Upload) binding() []byte {
	m := hmac.New(sha256.New, u.bindKey)
	m.Write([]byte(u.name))
	return m.Sum(nil)
}

func (u *Upload) tailAAD(i int64) []byte {
	b := append(make([]byte, 0, len(u.name)+8), u.name...)
	return binary.BigEndian.AppendUint64(b, uint64(i))
}

// readTail returns the tail's plaintext if it is the one after chunk k-1
// and authenticates; nil otherwise.
func (u *Upload) readTail(k int64) []byte {
	b, err := os.ReadFile(u.s.path(u.name) + tailSuffix)
	if err != nil || len(b) < tailHeader+16 || len(b) > tailHeader+chunk+16 || int64(binary.BigEndian.Uint64(b)) != k {
		return nil
	}
	pt, err := u.tail.Open(nil, b[8:tailHeader], b[tailHeader:], u.tailAAD(k))
	if err != nil {
		return nil
	}
	return pt
}

// writeTail seals plain as the tail after chunk k-1.
func (u *Upload) writeTail(k int64, plain []byte) error {
	p := u.s.path(u.name) + tailSuffix
	if len(plain) == 0 {
		os.Remove(p)
		return nil
	}
	b := binary.BigEndian.AppendUint64(make([]byte, 0, tailHeader+len(plain)+16), uint64(k))
	nonce := b[8:tailHeader]
	b = b[:tailHeader]
	rand.Read(nonce)
	b = u.tail.Seal(b, nonce, plain, u.tailAAD(k))
	return os.WriteFile(p, b, 0o600)
}

func kekErr(op string, err error) error {
	if errors.Is(err, kek.ErrUnavailable) {
		return fmt.Errorf("%w: %s: %v", sealed.ErrUnavailable, op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func newAEAD(k []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// readKey returns a partial's wrapped key and name binding from its key
// file.
func readKey(path string) (string, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, errors.New("no key file")
	}
	hdr := len(keyMagic) + 6
	if len(b) < hdr || string(b[:len(keyMagic)]) != keyMagic {
		return "", nil, errors.New("not a partial upload's key")
	}
	if c := binary.BigEndian.Uint32(b[len(keyMagic):]); c != chunk {
		return "", nil, fmt.Errorf("chunks of %d bytes, want %d", c, chunk)
	}
	n := int(binary.BigEndian.Uint16(b[len(keyMagic)+4:]))
	if n == 0 || n > maxWrapped || len(b) != hdr+n+sha256.Size {
		return "", nil, fmt.Errorf("wrapped key of %d bytes", n)
	}
	return string(b[hdr : hdr+n]), b[hdr+n:], nil
}

// heldIn is the plaintext a partial holds by its files' sizes (Status;
// a resume authenticates it).
func (s *Store) heldIn(n string, size int64) int64 {
	held := size / fullChunk * chunk
	f, err := os.Open(s.path(n) + tailSuffix)
	if err != nil {
		return held
	}
	defer f.Close()
	var idx [8]byte
	fi, err := f.Stat()
	if err != nil || fi.Size() < tailHeader+16 {
		return held
	}
	if _, err := io.ReadFull(f, idx[:]); err != nil || int64(binary.BigEndian.Uint64(idx[:])) != size/fullChunk {
		return held
	}
	return held + min(chunk, fi.Size()-tailHeader-16)
}

func (s *Store) expired(fi fs.FileInfo) bool {
	return s.cfg.Now().After(fi.ModTime().Add(s.cfg.TTL))
}

// base is the partial a file of the directory belongs to.
func base(file string) string {
	b, _ := strings.CutSuffix(file, keySuffix)
	b, _ = strings.CutSuffix(b, tailSuffix)
	return b
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
		if !strings.HasPrefix(e.Name(), prefix+"-") || e.Name() == keep || base(e.Name()) != e.Name() {
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
		s.remove(f.name)
		mine--
	}
}

// held is what a resume would find once this stream lets go.
func (u *Upload) held() int64 { return max(u.size, u.verifyEnd) }

// Write appends p to the partial upload and its hash. Bytes reach the disk
// only sealed, a whole chunk at a time.
func (u *Upload) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if u.size < u.verifyEnd {
			k, err := u.verify(p)
			n += k
			if err != nil {
				return n, err
			}
			p = p[k:]
			continue
		}
		if len(u.buf) == chunk {
			// A byte follows: the chunk held is not the last.
			if err := u.seal(false); err != nil {
				return n, err
			}
		}
		k := min(len(p), chunk-len(u.buf))
		u.buf = append(u.buf, p[:k]...)
		u.sum.Write(p[:k])
		u.size += int64(k)
		u.h.held.Store(u.held())
		n += k
		p = p[k:]
	}
	return n, nil
}

// verify compares resent bytes with those held sealed.
func (u *Upload) verify(p []byte) (int, error) {
	i := u.size / chunk
	if u.cmpIndex != i {
		if _, err := u.readChunk(u.f, i); err != nil {
			return 0, fmt.Errorf("%w: partial upload chunk %d fails authentication: upload again from offset 0", ErrInvalid, i)
		}
	}
	off := u.size - i*chunk
	k := min(int64(len(p)), chunk-off, u.verifyEnd-u.size)
	if !bytes.Equal(p[:k], u.cmp[off:off+k]) {
		return 0, fmt.Errorf("%w: the bytes resent from offset %d differ from those the publisher holds: upload again from offset 0", ErrInvalid, u.size)
	}
	u.sum.Write(p[:k])
	u.size += k
	return int(k), nil
}

// seal writes buf as the next chunk.
func (u *Upload) seal(last bool) error {
	ct := u.content.Seal(u.rec[:0], u.buf, u.index, last)
	if u.w == nil {
		u.w = directio.NewWriter(u.f, u.index*fullChunk)
	}
	if _, err := u.w.Write(ct); err != nil {
		return fmt.Errorf("write partial upload: %w", err)
	}
	if last {
		return nil // Finish: index and buf stay, for a Suspend after a failed store
	}
	u.index++
	u.buf = u.buf[:0]
	return nil
}

// flush writes every chunk sealed so far into the file and lets go of the
// writer's blocks.
func (u *Upload) flush() error {
	if u.w == nil {
		return nil
	}
	err := u.w.Close()
	u.w = nil
	if err != nil {
		return fmt.Errorf("write partial upload: %w", err)
	}
	return nil
}

// Size returns the bytes held so far, from offset 0.
func (u *Upload) Size() int64 { return u.size }

// Digest returns "sha256:<hex>" of the bytes held so far.
func (u *Upload) Digest() string { return "sha256:" + hex.EncodeToString(u.sum.Sum(nil)) }

// Stop closes when a newer stream resumes this upload: stop writing and let
// go (Suspend).
func (u *Upload) Stop() <-chan struct{} { return u.h.stop }

// Finish seals the last chunk and returns the upload as a blob sealed in
// the store's format, for sealed.PutSealed. The upload is still held:
// Discard it once stored, or Suspend it if the store fails.
func (u *Upload) Finish() (sealed.Sealed, error) {
	if u.size < u.verifyEnd || len(u.buf) == 0 && u.index > 0 {
		return sealed.Sealed{}, fmt.Errorf("%w: the upload ends at byte %d, but the publisher held more of it: upload again from offset 0", ErrInvalid, u.size)
	}
	if err := u.seal(true); err != nil {
		return sealed.Sealed{}, err
	}
	if err := u.flush(); err != nil {
		return sealed.Sealed{}, err
	}
	if err := u.f.Truncate(u.index*fullChunk + int64(len(u.buf)) + stream.Overhead); err != nil {
		return sealed.Sealed{}, fmt.Errorf("write partial upload: %w", err)
	}
	return sealed.Sealed{Path: u.f.Name(), DataKey: u.dk, Wrapped: u.wrapped, Chunk: chunk, Digest: u.Digest(), Size: u.size}, nil
}

// Suspend keeps the bytes for a resume within the TTL and lets go; the
// bytes after the last chunk are sealed into the tail file.
func (u *Upload) Suspend() {
	if err := u.flush(); err != nil {
		// What reached the file stays; a torn chunk is dropped on resume.
		u.f.Close()
		u.let()
		return
	}
	if u.size >= u.verifyEnd {
		u.f.Truncate(u.index * fullChunk) // a last chunk Finish sealed
		u.writeTail(u.index, u.buf)
	}
	u.f.Close()
	u.let()
}

// Discard removes the bytes and lets go.
func (u *Upload) Discard() {
	u.flush()
	u.f.Close()
	u.s.remove(u.name)
	u.let()
}

func (u *Upload) let() {
	clear(u.buf[:cap(u.buf)])
	clear(u.cmp[:cap(u.cmp)])
	clear(u.dk)
	clear(u.bindKey)
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
	if _, _, err := readKey(s.path(n) + keySuffix); err != nil {
		return 0, fmt.Errorf("%w: the partial upload is damaged (%v): upload from offset 0", ErrNotFound, err)
	}
	return s.heldIn(n, fi.Size()), nil
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
		n := base(e.Name())
		if n != e.Name() {
			// A key or tail file goes with its partial, by the partial's
			// age; alone, by its own.
			if _, err := os.Stat(s.path(n)); errors.Is(err, fs.ErrNotExist) {
				s.mu.Lock()
				if s.active[n] == nil {
					os.Remove(s.path(e.Name()))
				}
				s.mu.Unlock()
			}
			continue
		}
		s.mu.Lock()
		if s.active[n] == nil && os.Remove(s.path(n)) == nil {
			s.remove(n)
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
