package cosign

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzParseState: the state parser never panics, and what it accepts
// survives a save and a parse unchanged.
func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"version":1,"logs":{}}`))
	f.Add([]byte(`{"version":1,"logs":{"custody.test/log":{"size":0,"root_hash":"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=","checkpoint":""}}}`))
	f.Add([]byte(`{"version":1,"logs":{"a":null}}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1}{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseState(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseState(out)
		if err != nil {
			t.Fatalf("accepted %q, but not its re-encoding %q: %v", b, out, err)
		}
		out2, _ := json.Marshal(again)
		if !bytes.Equal(out, out2) {
			t.Fatalf("re-encoding changed: %q → %q", out, out2)
		}
	})
}
