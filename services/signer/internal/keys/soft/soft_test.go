package soft

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/custody-dev/custody/services/signer/internal/keys/keystest"
)

var pass = []byte("correct horse battery staple")

func TestConformance(t *testing.T) {
	keystest.Run(t, keystest.Options{New: func(t *testing.T) keys.Backend {
		s, err := Open(filepath.Join(t.TempDir(), "keystore.json"), pass, true, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}})
}

func TestReopenKeepsEveryVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keystore.json")
	s, err := Open(path, pass, true, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := s.Create(ctx, "artifact", keys.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rotate(ctx, "artifact"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "decision", keys.Ed25519); err != nil {
		t.Fatal(err)
	}
	again, err := Open(path, pass, false, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"artifact", "decision"} {
		want, _ := s.Versions(ctx, name)
		got, err := again.Versions(ctx, name)
		if err != nil || len(got) != len(want) {
			t.Fatalf("%s after reopen: %v %v", name, got, err)
		}
		for i := range want {
			if got[i].ID != want[i].ID || got[i].Version != want[i].Version || !got[i].Created.Equal(want[i].Created) {
				t.Fatalf("%s v%d changed on reopen", name, i+1)
			}
		}
	}
}

func TestWrongPassphraseAndNoPlaintext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keystore.json")
	s, err := Open(path, pass, true, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []string{keys.ECDSAP256, keys.Ed25519} {
		if _, err := s.Create(t.Context(), "k-"+map[string]string{keys.ECDSAP256: "ec", keys.Ed25519: "ed"}[alg], alg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(path, []byte("another passphrase entirely"), false, time.Now); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v, want ErrWrongPassphrase", err)
	}
	file, _ := os.ReadFile(path)
	for _, signer := range PrivateKeysForTest(s) {
		der, _ := x509.MarshalPKCS8PrivateKey(signer)
		var raw []byte
		switch k := signer.(type) {
		case *ecdsa.PrivateKey:
			raw = k.D.Bytes()
		case ed25519.PrivateKey:
			raw = k.Seed()
		}
		if bytes.Contains(file, der) || bytes.Contains(file, raw) {
			t.Fatal("keystore file contains a private key in plaintext")
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
	// A tampered file is refused, not half-read.
	file[len(file)/2] ^= 1
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, file, 0o600)
	if _, err := Open(bad, pass, false, time.Now); err == nil {
		t.Fatal("tampered keystore opened")
	}
}

func TestUnwritableKeystoreFailsClosed(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes anywhere")
	}
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "keystore.json"), pass, true, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o500)
	defer os.Chmod(dir, 0o700)
	if _, err := s.Create(t.Context(), "k", keys.ECDSAP256); !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("create with an unwritable keystore: %v, want ErrUnavailable", err)
	}
	if _, err := s.Versions(t.Context(), "k"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("a key that was not saved is listed: %v", err)
	}
}

// FuzzOpen: a keystore file is local but may be damaged; Open never panics.
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.json")
	s, err := Open(path, pass, true, time.Now)
	if err != nil {
		f.Fatal(err)
	}
	s.Create(f.Context(), "k", keys.ECDSAP256)
	seed, _ := os.ReadFile(path)
	f.Add(seed)
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "k.json")
		os.WriteFile(p, b, 0o600)
		Open(p, pass, false, time.Now)
	})
}
