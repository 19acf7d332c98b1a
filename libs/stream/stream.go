// Package stream is Custody's chunked AES-256-GCM format (the STREAM
// construction) for bytes at rest: the publisher's blob store and the
// edge's cache.
//
// Plaintext is cut into chunks of a fixed size; chunk i is sealed under the
// nonce i ‖ last-chunk flag, so every chunk is authenticated before any of
// its bytes is released, a read can start at any chunk, and truncation,
// extension and reordering all fail. A key must seal one stream only (the
// nonces repeat across streams): derive a fresh key per stream. The package
// knows nothing of digests, files or key records; callers bind those.
package stream

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Chunk sizes. DefaultChunk is large enough that the per-chunk GCM setup and
// tag are noise and small enough that a ranged read decrypts little it does
// not return.
const (
	DefaultChunk = 256 << 10
	MinChunk     = 4 << 10
	MaxChunk     = 16 << 20
	// Overhead is the GCM tag added to every chunk.
	Overhead = 16
	// KeySize is the size of a stream key (AES-256).
	KeySize = 32
)

// ErrCorrupt means the sealed bytes are not what was sealed under the key:
// a chunk fails authentication, or the stream is shorter or longer than its
// plaintext size says. No byte of a failing chunk is ever returned.
var ErrCorrupt = errors.New("sealed stream is corrupted")

// Chunks is the number of chunks of a plaintext of size bytes: at least one,
// so an empty plaintext still has an authenticated final chunk.
func Chunks(size int64, chunk int) int64 {
	return max(1, (size+int64(chunk)-1)/int64(chunk))
}

// SealedSize is the exact size of the sealed stream of size plaintext bytes.
func SealedSize(size int64, chunk int) int64 { return size + Chunks(size, chunk)*Overhead }

// Cipher seals and opens the chunks of one stream. It holds no mutable
// state and is safe for concurrent use.
type Cipher struct {
	aead  cipher.AEAD
	chunk int
}

// New returns the cipher of a stream with a KeySize-byte key and chunk
// plaintext bytes per chunk (MinChunk to MaxChunk).
func New(key []byte, chunk int) (*Cipher, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("stream key of %d bytes, want %d", len(key), KeySize)
	}
	if chunk < MinChunk || chunk > MaxChunk {
		return nil, fmt.Errorf("stream chunk size %d, want %d to %d", chunk, MinChunk, MaxChunk)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Cipher{aead: aead, chunk: chunk}, nil
}

// Chunk is the plaintext size of every chunk but the last.
func (c *Cipher) Chunk() int { return c.chunk }

// nonce is STREAM's: chunk index, then a flag set only on the last chunk.
func nonce(dst *[12]byte, i int64, last bool) []byte {
	binary.BigEndian.PutUint64(dst[:8], uint64(i))
	dst[8], dst[9], dst[10], dst[11] = 0, 0, 0, 0
	if last {
		dst[11] = 1
	}
	return dst[:]
}

// Seal appends chunk i of the stream, sealed, to dst and returns it; plain
// must be Chunk() bytes except for the last chunk, which has 0 to Chunk().
// dst may be plain[:0] when plain has Overhead bytes of spare capacity.
func (c *Cipher) Seal(dst, plain []byte, i int64, last bool) []byte {
	var n [12]byte
	return c.seal(&n, dst, plain, i, last)
}

func (c *Cipher) seal(n *[12]byte, dst, plain []byte, i int64, last bool) []byte {
	return c.aead.Seal(dst, nonce(n, i, last), plain, nil)
}

// Open authenticates sealed chunk i and appends its plaintext to dst; a
// chunk that fails is ErrCorrupt and appends nothing. dst may be sealed[:0].
func (c *Cipher) Open(dst, sealed []byte, i int64, last bool) ([]byte, error) {
	var n [12]byte
	return c.open(&n, dst, sealed, i, last)
}

func (c *Cipher) open(n *[12]byte, dst, sealed []byte, i int64, last bool) ([]byte, error) {
	pt, err := c.aead.Open(dst, nonce(n, i, last), sealed, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: chunk %d fails authentication", ErrCorrupt, i)
	}
	return pt, nil
}

// Start returns the chunk holding plaintext offset and where that chunk
// begins in the sealed stream. An offset at the end (size) still names the
// last chunk, so that a read there authenticates it.
func Start(size, offset int64, chunk int) (index, sealedOffset int64) {
	index = min(offset/int64(chunk), Chunks(size, chunk)-1)
	return index, index * int64(chunk+Overhead)
}

// Reader returns a reader of plaintext from offset (0 to size) of a stream
// of size plaintext bytes; src must be positioned at the sealed offset
// Start returns for it. Every chunk is authenticated before any of its bytes
// is returned; a failing chunk, a short stream or a byte after the last
// chunk is an error wrapping ErrCorrupt. Other errors of src are returned as
// they are. The reader holds one chunk's buffer.
func (c *Cipher) Reader(src io.Reader, size, offset int64) io.Reader {
	first, _ := Start(size, offset, c.chunk)
	return &reader{c: c, src: src, size: size, index: first, skip: offset - first*int64(c.chunk),
		buf: make([]byte, c.chunk+Overhead)}
}

type reader struct {
	c     *Cipher
	src   io.Reader
	size  int64
	index int64
	skip  int64
	buf   []byte
	out   []byte
	err   error
	nonce [12]byte
}

func (r *reader) Read(p []byte) (int, error) {
	for len(r.out) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.next()
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

func (r *reader) next() error {
	n := Chunks(r.size, r.c.chunk)
	if r.index >= n {
		// No byte may follow the last chunk.
		var one [1]byte
		if k, _ := r.src.Read(one[:]); k > 0 {
			return fmt.Errorf("%w: bytes after the last chunk", ErrCorrupt)
		}
		return io.EOF
	}
	last := r.index == n-1
	plain := int64(r.c.chunk)
	if last {
		plain = r.size - r.index*int64(r.c.chunk)
	}
	ct := r.buf[:plain+Overhead]
	if _, err := io.ReadFull(r.src, ct); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: truncated in chunk %d", ErrCorrupt, r.index)
		}
		return err
	}
	pt, err := r.c.open(&r.nonce, ct[:0], ct, r.index, last)
	if err != nil {
		return err
	}
	r.index++
	r.out = pt[r.skip:]
	r.skip = 0
	return nil
}

// Sealer returns a reader of the sealed stream of src's bytes. It reads one
// chunk ahead to know which chunk is the last, holds two chunk buffers and
// allocates none per chunk. An error of src is returned as it is.
func (c *Cipher) Sealer(src io.Reader) io.Reader {
	return &sealer{c: c, src: src, cur: make([]byte, c.chunk+Overhead), next: make([]byte, c.chunk+Overhead)}
}

type sealer struct {
	c         *Cipher
	src       io.Reader
	cur, next []byte // plaintext chunks, capacity chunk+Overhead
	nextN     int
	out       []byte // sealed bytes not yet returned
	index     int64
	started   bool
	done      bool
	err       error
	nonce     [12]byte
}

func (s *sealer) fill(buf []byte) (int, error) {
	n, err := io.ReadFull(s.src, buf[:s.c.chunk])
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil
	}
	return n, err
}

func (s *sealer) Read(p []byte) (int, error) {
	for len(s.out) == 0 {
		if err := s.advance(); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.out)
	s.out = s.out[n:]
	return n, nil
}

// WriteTo writes each sealed chunk to w in one Write, straight from the
// sealer's buffer: io.Copy uses it instead of copying through a buffer of
// its own. An error of src is returned as it is, as from Read.
func (s *sealer) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(s.out) == 0 {
			err := s.advance()
			if errors.Is(err, io.EOF) {
				return total, nil
			}
			if err != nil {
				return total, err
			}
		}
		n, err := w.Write(s.out)
		total += int64(n)
		s.out = s.out[n:]
		if err != nil {
			return total, err
		}
	}
}

// advance seals the next chunk into out; io.EOF after the last one.
func (s *sealer) advance() error {
	if s.err != nil {
		return s.err
	}
	if s.done {
		return io.EOF
	}
	if !s.started {
		n, err := s.fill(s.next)
		if err != nil {
			s.err = err
			return err
		}
		s.nextN, s.started = n, true
	}
	s.cur, s.next = s.next, s.cur
	curN := s.nextN
	last := curN < s.c.chunk
	if !last {
		n, err := s.fill(s.next)
		if err != nil {
			s.err = err
			return err
		}
		s.nextN = n
		last = n == 0
	}
	s.out = s.c.seal(&s.nonce, s.cur[:0], s.cur[:curN], s.index, last)
	s.index++
	s.done = last
	return nil
}
