package soft

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/attest"
)

var pass = []byte("correct horse battery staple")

func TestCreateReopenSign(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keystore.json")
	s, err := Open(path, pass, true, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := s.Keys(t.Context())
	if len(keys) != 2 || keys[0].Purpose != attest.PurposeArtifact || keys[1].Purpose != attest.PurposeDecision {
		t.Fatalf("keys = %+v, want one artifact and one decision key", keys)
	}
	again, err := Open(path, pass, false, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	keys2, _ := again.Keys(t.Context())
	if keys2[0].ID != keys[0].ID {
		t.Fatal("reopened keystore has other keys")
	}
	msg := []byte("PAE bytes")
	sig, err := again.Sign(t.Context(), keys[0].ID, msg)
	if err != nil {
		t.Fatal(err)
	}
	pub, alg, err := attest.ParsePublicKey(keys[0].PublicDER)
	if err != nil {
		t.Fatal(err)
	}
	if err := attest.VerifySignature(attest.Key{ID: keys[0].ID, Algorithm: alg, Public: pub}, msg, sig); err != nil {
		t.Fatal(err)
	}
	if _, err := again.Sign(t.Context(), "nope", msg); err == nil {
		t.Fatal("unknown key signed")
	}
}

func TestWrongPassphraseAndNoPlaintext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keystore.json")
	s, err := Open(path, pass, true, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, []byte("another passphrase entirely"), false, time.Now); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v, want ErrWrongPassphrase", err)
	}
	file, _ := os.ReadFile(path)
	for id, signer := range s.signers {
		der, _ := x509.MarshalPKCS8PrivateKey(signer)
		d := signer.(*ecdsa.PrivateKey).D.Bytes()
		if bytes.Contains(file, der) || bytes.Contains(file, d) {
			t.Fatalf("keystore file contains key %s in plaintext", id)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("keystore mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing.json"), pass, false, time.Now); err == nil {
		t.Fatal("missing keystore without create: want an error")
	}
	if _, err := Open(path, []byte("short"), false, time.Now); err == nil {
		t.Fatal("short passphrase accepted")
	}
}
