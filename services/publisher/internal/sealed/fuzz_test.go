package sealed

import (
	"encoding/json"
	"testing"

	"github.com/custody-dev/custody/libs/stream"
)

// FuzzParseRecord: key records come from storage, which an attacker may
// write to. parseRecord must never panic, and whatever it accepts must
// satisfy the invariants the read path relies on.
func FuzzParseRecord(f *testing.F) {
	good, _ := json.Marshal(record{Version: 1, Digest: "sha256:" + string(make64('a')), Size: 5, Chunk: DefaultChunk,
		Data: "data/ab/abcd", KEK: "soft", Wrapped: "soft:v1:AAAA", Tag: make([]byte, 32)})
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add(append(good, []byte(` {}`)...))
	f.Add([]byte(`{"version":1,"size":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRecord(b)
		if err != nil {
			return
		}
		if r.Size < 0 || r.Size > MaxSize || r.Chunk < minChunk || r.Chunk > maxChunk || len(r.Tag) != 32 || stream.Chunks(r.Size, r.Chunk) < 1 {
			t.Fatalf("accepted an out-of-range record: %+v", r)
		}
		if r.sealedSize() < r.Size {
			t.Fatalf("sealed size %d below plaintext size %d", r.sealedSize(), r.Size)
		}
	})
}

func make64(c byte) []byte {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return b
}
