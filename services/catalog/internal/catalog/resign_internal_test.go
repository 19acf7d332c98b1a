package catalog

import (
	"bytes"
	"testing"

	"github.com/custody-dev/custody/libs/attest"
)

// FuzzSameStatement checks that a re-signature is accepted exactly when it
// carries the current payload unchanged, whatever the new envelope holds.
func FuzzSameStatement(f *testing.F) {
	cur, err := attest.NewProvenance(attest.Artifact{Name: "app", Version: "1.0.0", Digest: "sha256:" + string(bytes.Repeat([]byte("a"), 64)),
		Channel: "stable", BuilderID: "spiffe://custody.test/builder/ci"})
	if err != nil {
		f.Fatal(err)
	}
	other, err := attest.NewProvenance(attest.Artifact{Name: "app", Version: "1.0.1", Digest: "sha256:" + string(bytes.Repeat([]byte("b"), 64)),
		Channel: "beta", BuilderID: "spiffe://custody.test/builder/ci"})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{cur, other, append(bytes.Clone(cur), ' '), cur[:len(cur)/2], []byte(`{}`), nil} {
		f.Add(attest.PayloadType, seed)
	}
	f.Fuzz(func(t *testing.T, payloadType string, payload []byte) {
		current := &attest.Envelope{PayloadType: attest.PayloadType, Payload: cur}
		err := sameStatement(current, &attest.Envelope{PayloadType: payloadType, Payload: payload})
		same := payloadType == attest.PayloadType && bytes.Equal(payload, cur)
		if same != (err == nil) {
			t.Errorf("sameStatement(%q, %q) = %v", payloadType, payload, err)
		}
	})
}
