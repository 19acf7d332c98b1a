package remote

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
)

func TestConvertKey(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	good := func() *signerv1.PublicKey {
		return &signerv1.PublicKey{KeyId: "k1", Purpose: signerv1.KeyPurpose_KEY_PURPOSE_ARTIFACT, Algorithm: "ecdsa-p256-sha256", PublicKeyDer: der}
	}
	k, err := convertKey(good())
	if err != nil {
		t.Fatal(err)
	}
	if k.ID != "k1" || k.Purpose != "artifact" || k.Algorithm != "ecdsa-p256-sha256" || k.Public == nil {
		t.Errorf("convertKey = %+v", k)
	}
	decision := good()
	decision.Purpose = signerv1.KeyPurpose_KEY_PURPOSE_DECISION
	if k, err := convertKey(decision); err != nil || k.Purpose != "decision" {
		t.Errorf("decision key: %+v, %v", k, err)
	}

	for _, tt := range []struct {
		name   string
		modify func(*signerv1.PublicKey)
		want   string
	}{
		{"no purpose", func(k *signerv1.PublicKey) { k.Purpose = signerv1.KeyPurpose_KEY_PURPOSE_UNSPECIFIED }, "purpose"},
		{"algorithm mislabelled", func(k *signerv1.PublicKey) { k.Algorithm = "ed25519" }, `listed as "ed25519"`},
		{"not DER", func(k *signerv1.PublicKey) { k.PublicKeyDer = []byte("junk") }, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k := good()
			tt.modify(k)
			_, err := convertKey(k)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("convertKey = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
