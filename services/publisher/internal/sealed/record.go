package sealed

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/stream"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore"
)

// record is the key object of one blob: everything needed to read it
// except the KEK. Tag binds the digest, size, chunk size and data object to
// the data key, so a record edited, swapped for another blob's or pointed
// at other ciphertext fails before any byte is released.
type record struct {
	Version int    `json:"version"`
	Digest  string `json:"digest"` // sha256 of the plaintext
	Size    int64  `json:"size"`   // plaintext bytes
	Chunk   int    `json:"chunk"`  // plaintext bytes per chunk
	Data    string `json:"data"`   // ciphertext object name
	KEK     string `json:"kek"`    // back end that wrapped the key
	Wrapped string `json:"wrapped"`
	Tag     []byte `json:"tag"` // HMAC-SHA256 under the data key's MAC key
}

const recordVersion = 1

// maxRecord bounds a record read from storage.
const maxRecord = 16 << 10

// parseRecord strictly decodes a record: unknown fields, trailing data,
// and out-of-range values are errors.
func parseRecord(b []byte) (*record, error) {
	if len(b) > maxRecord {
		return nil, fmt.Errorf("record of %d bytes", len(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r record
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("parse record: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("parse record: trailing data")
	}
	switch {
	case r.Version != recordVersion:
		return nil, fmt.Errorf("record version %d, want %d", r.Version, recordVersion)
	case !digest.Valid(r.Digest):
		return nil, fmt.Errorf("record digest %q", r.Digest)
	case r.Size < 0 || r.Size > MaxSize:
		return nil, fmt.Errorf("record size %d", r.Size)
	case r.Chunk < minChunk || r.Chunk > maxChunk:
		return nil, fmt.Errorf("record chunk size %d", r.Chunk)
	case !blobstore.ValidName(r.Data):
		return nil, fmt.Errorf("record data object %q", r.Data)
	case r.KEK == "" || r.Wrapped == "" || len(r.Wrapped) > 4096:
		return nil, errors.New("record without a wrapped key")
	case len(r.Tag) != sha256.Size:
		return nil, fmt.Errorf("record tag of %d bytes", len(r.Tag))
	}
	return &r, nil
}

// tag is the record's MAC: HMAC-SHA256(macKey, fields, length-prefixed).
func (r *record) tag(macKey []byte) []byte {
	m := hmac.New(sha256.New, macKey)
	var n [8]byte
	for _, f := range [][]byte{[]byte("custody sealed record v1"), []byte(r.Digest), []byte(r.Data)} {
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		m.Write(n[:])
		m.Write(f)
	}
	binary.BigEndian.PutUint64(n[:], uint64(r.Size))
	m.Write(n[:])
	binary.BigEndian.PutUint64(n[:], uint64(r.Chunk))
	m.Write(n[:])
	return m.Sum(nil)
}

// sealedSize is the exact size of the ciphertext object.
func (r *record) sealedSize() int64 { return stream.SealedSize(r.Size, r.Chunk) }
