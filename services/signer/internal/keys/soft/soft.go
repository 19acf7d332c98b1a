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
	"crypto/ed25519"
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
	"sync"
	"time"

	"golang.org/x/crypto/scrypt"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/daemon"
	"github.com/custody-dev/custody/services/signer/internal/keys"
)

// scrypt parameters: about 100 ms per unlock on the reference machine.
const (
	scryptN = 1 << 15
	scryptR = 8
	scryptP = 1
)

const (
	fileVersion = 2
	aad         = "custody-keystore-v2"
)

// ErrWrongPassphrase means the keystore could not be decrypted.
var ErrWrongPassphrase = errors.New("cannot decrypt keystore: wrong passphrase or corrupted file")

// Store holds decrypted keys in memory and rewrites the encrypted file on
// every change. It is safe for concurrent use.
type Store struct {
	path string
	aead cipher.AEAD
	head fileJSON // salt and scrypt parameters, kept across rewrites
	now  func() time.Time

	mu   sync.RWMutex
	keys map[string][]entry // name → versions, oldest first
}

type entry struct {
	keys.Version
	signer crypto.Signer
	pkcs8  []byte
}

var _ keys.Backend = (*Store)(nil)

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
	Name      string    `json:"name"`
	Version   int       `json:"version"`
	Algorithm string    `json:"algorithm"`
	PKCS8     []byte    `json:"pkcs8"`
	Created   time.Time `json:"created"`
}

// Open decrypts the keystore at path with the passphrase. If the file does
// not exist and create is true, it starts an empty one.
func Open(path string, passphrase []byte, create bool, now func() time.Time) (*Store, error) {
	if len(passphrase) < 16 {
		return nil, errors.New("keystore passphrase is shorter than 16 bytes")
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		head := fileJSON{Version: fileVersion, Salt: random(32), N: scryptN, R: scryptR, P: scryptP}
		aead, err := newAEAD(passphrase, head.Salt, head.N, head.R, head.P)
		if err != nil {
			return nil, err
		}
		s := &Store{path: path, aead: aead, head: head, now: now, keys: map[string][]entry{}}
		if err := s.saveLocked(); err != nil {
			return nil, err
		}
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read keystore: %w", err)
	}
	var head fileJSON
	if err := json.Unmarshal(b, &head); err != nil || head.Version != fileVersion {
		return nil, fmt.Errorf("keystore %s is not a version %d keystore: a development keystore from an older Custody cannot be read; remove it (and the dev directory) to start afresh", path, fileVersion)
	}
	if head.N < 1<<14 || head.N > 1<<20 || head.N&(head.N-1) != 0 || head.R < 8 || head.R > 32 || head.P < 1 || head.P > 4 || len(head.Salt) < 16 {
		return nil, fmt.Errorf("keystore %s has scrypt parameters out of range", path)
	}
	aead, err := newAEAD(passphrase, head.Salt, head.N, head.R, head.P)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, head.Nonce, head.Ciphertext, []byte(aad))
	if err != nil {
		return nil, ErrWrongPassphrase
	}
	var kjs []keyJSON
	if err := json.Unmarshal(plain, &kjs); err != nil {
		return nil, fmt.Errorf("keystore contents: %w", err)
	}
	s := &Store{path: path, aead: aead, head: head, now: now, keys: map[string][]entry{}}
	for _, kj := range kjs {
		e, err := parseEntry(kj)
		if err != nil {
			return nil, err
		}
		vs := s.keys[kj.Name]
		if kj.Version != len(vs)+1 {
			return nil, fmt.Errorf("keystore key %s: version %d out of order", kj.Name, kj.Version)
		}
		s.keys[kj.Name] = append(vs, e)
	}
	return s, nil
}

func parseEntry(kj keyJSON) (entry, error) {
	k, err := x509.ParsePKCS8PrivateKey(kj.PKCS8)
	if err != nil {
		return entry{}, fmt.Errorf("keystore key %s v%d: %w", kj.Name, kj.Version, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return entry{}, fmt.Errorf("keystore key %s v%d is not a signing key", kj.Name, kj.Version)
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return entry{}, err
	}
	_, alg, err := attest.ParsePublicKey(pub)
	if err != nil || alg != kj.Algorithm {
		return entry{}, fmt.Errorf("keystore key %s v%d: algorithm %s does not match the key", kj.Name, kj.Version, kj.Algorithm)
	}
	id, err := attest.KeyID(signer.Public())
	if err != nil {
		return entry{}, err
	}
	return entry{
		Version: keys.Version{Name: kj.Name, Version: kj.Version, ID: id, Algorithm: alg, PublicDER: pub, Created: kj.Created},
		signer:  signer, pkcs8: kj.PKCS8,
	}, nil
}

// saveLocked encrypts every key under a fresh nonce and replaces the file
// atomically.
func (s *Store) saveLocked() error {
	kjs := []keyJSON{}
	for _, vs := range s.keys {
		for _, e := range vs {
			kjs = append(kjs, keyJSON{Name: e.Name, Version: e.Version.Version, Algorithm: e.Algorithm, PKCS8: e.pkcs8, Created: e.Created})
		}
	}
	plain, err := json.Marshal(kjs)
	if err != nil {
		return err
	}
	f := s.head
	f.Nonce = random(12)
	f.Ciphertext = s.aead.Seal(nil, f.Nonce, plain, []byte(aad))
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := daemon.WriteFileAtomic(s.path, b, 0o600); err != nil {
		return fmt.Errorf("%w: write keystore: %v", keys.ErrUnavailable, err)
	}
	return nil
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

// Kind implements keys.Backend.
func (s *Store) Kind() string { return "soft" }

// Close implements keys.Backend.
func (s *Store) Close() error { return nil }

func generate(alg string) (crypto.Signer, error) {
	switch alg {
	case keys.ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case keys.Ed25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	}
	return nil, fmt.Errorf("%w: algorithm %q: want %s or %s", keys.ErrInvalid, alg, keys.ECDSAP256, keys.Ed25519)
}

// addLocked generates version len(versions)+1 of name and saves.
func (s *Store) addLocked(name, alg string) (keys.Version, error) {
	signer, err := generate(alg)
	if err != nil {
		return keys.Version{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return keys.Version{}, err
	}
	e, err := parseEntry(keyJSON{Name: name, Version: len(s.keys[name]) + 1, Algorithm: alg, PKCS8: der, Created: s.now().UTC()})
	if err != nil {
		return keys.Version{}, err
	}
	before := s.keys[name]
	s.keys[name] = append(before[:len(before):len(before)], e)
	if err := s.saveLocked(); err != nil {
		if len(before) == 0 {
			delete(s.keys, name)
		} else {
			s.keys[name] = before
		}
		return keys.Version{}, err
	}
	return e.Version, nil
}

// Create implements keys.Backend.
func (s *Store) Create(_ context.Context, name, algorithm string) (keys.Version, error) {
	if !keys.ValidName(name) {
		return keys.Version{}, fmt.Errorf("%w: key name %q", keys.ErrInvalid, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.keys[name]) > 0 {
		return keys.Version{}, fmt.Errorf("%w: %q in the software keystore", keys.ErrExists, name)
	}
	return s.addLocked(name, algorithm)
}

// Rotate implements keys.Backend.
func (s *Store) Rotate(_ context.Context, name string) (keys.Version, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vs := s.keys[name]
	if len(vs) == 0 {
		return keys.Version{}, fmt.Errorf("%w: %q in the software keystore", keys.ErrNotFound, name)
	}
	return s.addLocked(name, vs[0].Algorithm)
}

// Versions implements keys.Backend.
func (s *Store) Versions(_ context.Context, name string) ([]keys.Version, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	vs := s.keys[name]
	if len(vs) == 0 {
		return nil, fmt.Errorf("%w: %q in the software keystore", keys.ErrNotFound, name)
	}
	out := make([]keys.Version, len(vs))
	for i, e := range vs {
		out[i] = e.Version
	}
	return out, nil
}

// Sign implements keys.Backend: ECDSA keys sign SHA-256(message) with an
// ASN.1 DER signature, Ed25519 keys sign message itself.
func (s *Store) Sign(_ context.Context, name string, version int, message []byte) ([]byte, error) {
	s.mu.RLock()
	vs := s.keys[name]
	s.mu.RUnlock()
	if version < 1 || version > len(vs) {
		return nil, fmt.Errorf("%w: %q version %d in the software keystore", keys.ErrNotFound, name, version)
	}
	signer := vs[version-1].signer
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
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []crypto.Signer
	for _, vs := range s.keys {
		for _, e := range vs {
			out = append(out, e.signer)
		}
	}
	return out
}
