package cache

import (
	"bytes"
	"testing"

	"github.com/custody-dev/custody/libs/stream"
)

// FuzzParseHeader: whatever parseHeader accepts is in range, and encodes
// back to the same bytes.
func FuzzParseHeader(f *testing.F) {
	h := header{size: 12345, chunk: stream.DefaultChunk}
	f.Add(h.marshal())
	f.Add([]byte(magic))
	f.Add(bytes.Repeat([]byte{0xff}, headerSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHeader(b)
		if err != nil {
			return
		}
		if h.size < 0 || h.size > MaxSize || h.chunk < stream.MinChunk || h.chunk > stream.MaxChunk || h.fileSize() < int64(headerSize) {
			t.Fatalf("accepted an out-of-range header: %+v", h)
		}
		if !bytes.Equal(h.marshal(), b[:headerSize]) {
			t.Fatal("header does not encode back to its bytes")
		}
	})
}
