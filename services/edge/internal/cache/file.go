package cache

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/custody-dev/custody/libs/stream"
)

// A cache file is a header, then the blob as a libs/stream stream under a
// key of its own:
//
//	magic "custody edge cache v1\n" | salt (32) | size (8, big-endian) |
//	chunk (4, big-endian) | tag (32) | sealed chunks
//
// The content key and the header's MAC key are HKDF-SHA256 of the cache key
// (held only in the edge's memory) with the file's random salt and info
// naming the digest, so a file renamed to another digest, a header edited,
// or a file written under another cache key fails before any byte is
// released. tag = HMAC-SHA256(MAC key, the header before it).
const (
	magic      = "custody edge cache v1\n"
	saltSize   = 32
	headerSize = len(magic) + saltSize + 8 + 4 + sha256.Size
	// MaxSize bounds a cached blob's plaintext (the publisher's bound).
	MaxSize = 1 << 40
)

// header is a cache file's parsed header, not yet authenticated.
type header struct {
	salt  [saltSize]byte
	size  int64
	chunk int
	tag   [sha256.Size]byte
}

// parseHeader decodes a cache file's header: the bytes come from disk,
// which someone else may have written.
func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) < headerSize {
		return h, fmt.Errorf("cache file header of %d bytes, want %d", len(b), headerSize)
	}
	if string(b[:len(magic)]) != magic {
		return h, errors.New("not a cache file of this version")
	}
	b = b[len(magic):]
	copy(h.salt[:], b)
	b = b[saltSize:]
	size := binary.BigEndian.Uint64(b)
	chunk := binary.BigEndian.Uint32(b[8:])
	copy(h.tag[:], b[12:])
	if size > MaxSize {
		return h, fmt.Errorf("cache file size %d over %d", size, MaxSize)
	}
	if chunk < stream.MinChunk || chunk > stream.MaxChunk {
		return h, fmt.Errorf("cache file chunk size %d", chunk)
	}
	h.size, h.chunk = int64(size), int(chunk)
	return h, nil
}

// marshal is the header's bytes, tag included.
func (h *header) marshal() []byte {
	b := make([]byte, 0, headerSize)
	b = append(b, magic...)
	b = append(b, h.salt[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(h.size))
	b = binary.BigEndian.AppendUint32(b, uint32(h.chunk))
	return append(b, h.tag[:]...)
}

// sealedSize is the exact size of a cache file with this header.
func (h *header) fileSize() int64 { return int64(headerSize) + stream.SealedSize(h.size, h.chunk) }

// keys derives a file's content cipher and header MAC key.
func (c *Cache) keys(h *header, digest string) (*stream.Cipher, []byte, error) {
	ck, err := hkdf.Key(sha256.New, c.key, h.salt[:], "custody edge cache content v1\x00"+digest, stream.KeySize)
	if err != nil {
		return nil, nil, err
	}
	mk, err := hkdf.Key(sha256.New, c.key, h.salt[:], "custody edge cache header v1\x00"+digest, sha256.Size)
	if err != nil {
		return nil, nil, err
	}
	content, err := stream.New(ck, h.chunk)
	return content, mk, err
}

func (h *header) mac(macKey []byte) []byte {
	m := hmac.New(sha256.New, macKey)
	m.Write(h.marshal()[:headerSize-sha256.Size])
	return m.Sum(nil)
}

// seal fills in the tag.
func (h *header) seal(macKey []byte) { copy(h.tag[:], h.mac(macKey)) }

// authentic reports whether the tag is the header's under macKey.
func (h *header) authentic(macKey []byte) bool { return hmac.Equal(h.mac(macKey), h.tag[:]) }
