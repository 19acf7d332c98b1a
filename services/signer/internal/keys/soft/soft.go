// Package soft is the signer's development keystore: private keys encrypted
// at rest in one local file. It is for `custody dev` and tests only; the
// signer refuses it outside dev mode.
package soft

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/scrypt"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/daemon"
)

// scrypt parameters: about 100 ms per unlock on the reference machine.
const (
	scryptN = 1 << 15
	scryptR = 8
	scryptP = 1
)

// ErrWrongPassphrase means the keystore could not be decrypted.
var ErrWrongPassphrase = errors.New("cannot decrypt keystore: wrong passphrase or corrupted file")

// Key is the public description of one key version.
type Key struct {
	ID        string
	Purpose   string
	Algorithm string
	PublicDER []byte
	ValidFrom time.Time
}

// Store holds decrypted keys in memory. It is safe for concurrent use: keys
// are only read after Open.
type Store struct {
	keys    []Key
	signers map[string]crypto.Signer
}

type fileJSON struct {
	Version    int    `json:"version"`
	Salt       []byte `json:"salt"`
	N          int    `json:"scrypt_n"`
	R          int    `json:"scrypt_r"`
	P          int    `json:"scrypt_p"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

type keyJSON struct {
	ID        string    `json:"id"`
	Purpose   string    `json:"purpose"`
	Algorithm string    `json:"algorithm"`
	PKCS8     []byte    `json:"pkcs8"`
	ValidFrom time.Time `json:"valid_from"`
}

// Open decrypts the keystore at path with the passphrase. If the file does
// not exist and create is true, it makes one with a fresh ECDSA P-256 key for
// each purpose (artifact, decision).
func Open(path string, passphrase []byte, create bool, now func() time.Time) (*Store, error) {
	if len(passphrase) < 16 {
		return nil, errors.New("keystore passphrase is shorter than 16 bytes")
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		return createStore(path, passphrase, now())
	}
	if err != nil {
		return nil, fmt.Errorf("read keystore: %w", err)
	}
	var f fileJSON
	if err := json.Unmarshal(b, &f); err != nil || f.Version != 1 {
		return nil, fmt.Errorf("keystore %s is not a version 1 keystore", path)
	}
	aead, err := newAEAD(passphrase, f.Salt, f.N, f.R, f.P)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, f.Nonce, f.Ciphertext, []byte("custody-keystore-v1"))
	if err != nil {
		return nil, ErrWrongPassphrase
	}
	var kjs []keyJSON
	if err := json.Unmarshal(plain, &kjs); err != nil {
		return nil, fmt.Errorf("keystore contents: %w", err)
	}
	return fromJSON(kjs)
}

func createStore(path string, passphrase []byte, now time.Time) (*Store, error) {
	var kjs []keyJSON
	for _, purpose := range []string{attest.PurposeArtifact, attest.PurposeDecision} {
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, err
		}
		id, err := attest.KeyID(priv.Public())
		if err != nil {
			return nil, err
		}
		kjs = append(kjs, keyJSON{ID: id, Purpose: purpose, Algorithm: attest.AlgECDSAP256, PKCS8: der, ValidFrom: now.UTC()})
	}
	plain, err := json.Marshal(kjs)
	if err != nil {
		return nil, err
	}
	f := fileJSON{Version: 1, Salt: random(32), N: scryptN, R: scryptR, P: scryptP, Nonce: random(12)}
	aead, err := newAEAD(passphrase, f.Salt, f.N, f.R, f.P)
	if err != nil {
		return nil, err
	}
	f.Ciphertext = aead.Seal(nil, f.Nonce, plain, []byte("custody-keystore-v1"))
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := daemon.WriteFileAtomic(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("create keystore: %w", err)
	}
	return fromJSON(kjs)
}

func fromJSON(kjs []keyJSON) (*Store, error) {
	s := &Store{signers: map[string]crypto.Signer{}}
	for _, kj := range kjs {
		k, err := x509.ParsePKCS8PrivateKey(kj.PKCS8)
		if err != nil {
			return nil, fmt.Errorf("keystore key %s: %w", kj.ID, err)
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("keystore key %s is not a signing key", kj.ID)
		}
		pub, err := x509.MarshalPKIXPublicKey(signer.Public())
		if err != nil {
			return nil, err
		}
		if id, _ := attest.KeyID(signer.Public()); id != kj.ID {
			return nil, fmt.Errorf("keystore key %s: id does not match its public key", kj.ID)
		}
		s.keys = append(s.keys, Key{ID: kj.ID, Purpose: kj.Purpose, Algorithm: kj.Algorithm, PublicDER: pub, ValidFrom: kj.ValidFrom})
		s.signers[kj.ID] = signer
	}
	return s, nil
}

func newAEAD(passphrase, salt []byte, n, r, p int) (cipher.AEAD, error) {
	key, err := scrypt.Key(passphrase, salt, n, r, p, 32)
	if err != nil {
		return nil, fmt.Errorf("derive keystore key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func random(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return b
}

// Keys returns the public description of every key version.
func (s *Store) Keys(context.Context) ([]Key, error) {
	return append([]Key(nil), s.keys...), nil
}

// Sign signs message with key id: ECDSA keys sign SHA-256(message) with an
// ASN.1 DER signature, Ed25519 keys sign message itself.
func (s *Store) Sign(_ context.Context, id string, message []byte) ([]byte, error) {
	signer, ok := s.signers[id]
	if !ok {
		return nil, fmt.Errorf("no key %q in the keystore", id)
	}
	if _, isEC := signer.(*ecdsa.PrivateKey); isEC {
		sum := sha256.Sum256(message)
		return signer.Sign(rand.Reader, sum[:], crypto.SHA256)
	}
	return signer.Sign(rand.Reader, message, crypto.Hash(0))
}

// ReadPassphrase reads a passphrase file, trimming one trailing newline.
func ReadPassphrase(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read keystore passphrase: %w", err)
	}
	return []byte(strings.TrimRight(string(b), "\r\n")), nil
}

// PrivateKeysForTest returns the private keys, so that tests in other
// packages can assert they never leave the signer. Production code must not
// call it.
func PrivateKeysForTest(s *Store) []crypto.Signer {
	var out []crypto.Signer
	for _, k := range s.keys {
		out = append(out, s.signers[k.ID])
	}
	return out
}
