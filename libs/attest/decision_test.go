package attest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"
)

const gatekeeper = "spiffe://custody.test/service/gatekeeper"

func signedVSA(t testing.TB, k testKey, mod func(*Decision)) []byte {
	d := decision()
	if mod != nil {
		mod(&d)
	}
	stmt, err := NewVSA(d)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := SignEnvelope(PayloadType, stmt, k.ID, k.sign)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestVerifyAllow(t *testing.T) {
	k, artifactKey := edKey(t, PurposeDecision), edKey(t, PurposeArtifact)
	keys := []Key{k.Key, artifactKey.Key}
	for _, tc := range []struct {
		name string
		raw  []byte
		now  time.Time
		ok   bool
	}{
		{"a fresh allow", signedVSA(t, k, nil), when.Add(time.Minute), true},
		{"a deny", signedVSA(t, k, func(d *Decision) { d.Passed = false }), when, false},
		{"by another verifier", signedVSA(t, k, func(d *Decision) { d.VerifierID = "spiffe://custody.test/deployer/x" }), when, false},
		{"too old", signedVSA(t, k, nil), when.Add(2 * time.Hour), false},
		{"dated in the future", signedVSA(t, k, nil), when.Add(-2 * time.Minute), false},
		{"signed by an artifact key", signedVSA(t, artifactKey, nil), when, false},
	} {
		env, err := ParseEnvelope(tc.raw)
		if err != nil {
			t.Fatal(err)
		}
		d, keyID, err := VerifyAllow(env, keys, gatekeeper, tc.now, time.Hour)
		if tc.ok {
			if err != nil || keyID != k.ID || d.DecisionID != "d-1" || d.Environment != "staging" {
				t.Errorf("%s: %+v %s %v", tc.name, d, keyID, err)
			}
			continue
		}
		if !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%s: %v, want ErrNotAllowed", tc.name, err)
		}
	}
}

// FuzzVerifyAllow: whatever envelope bytes arrive, VerifyAllow never
// panics and accepts only the payload that was signed.
func FuzzVerifyAllow(f *testing.F) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	id, _ := KeyID(pub)
	k := testKey{Key{ID: id, Purpose: PurposeDecision, Algorithm: AlgEd25519, Public: pub}, func(m []byte) ([]byte, error) { return ed25519.Sign(priv, m), nil }}
	good := signedVSA(f, k, nil)
	signed, _ := ParseEnvelope(good)
	f.Add(good)
	f.Add([]byte(`{"payloadType":"application/vnd.in-toto+json","payload":"","signatures":[]}`))
	f.Add(bytes.Replace(good, []byte(`"payload":"`), []byte(`"payload":"e`), 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := ParseEnvelope(b)
		if err != nil {
			return
		}
		if _, _, err := VerifyAllow(env, []Key{k.Key}, gatekeeper, when, time.Hour); err == nil && !bytes.Equal(env.Payload, signed.Payload) {
			t.Fatalf("accepted a payload that was not signed: %q", env.Payload)
		}
	})
}
