package trustroot

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/strictjson"
)

// maxSignatures is the most signatures attest.ParseEnvelope accepts.
const maxSignatures = 16

// Sign adds the signature of one root key. in is either an unsigned root
// (a draft, any JSON formatting) or a DSSE envelope already carrying other
// signatures; the result is the DSSE envelope JSON, whose payload is the
// root's canonical JSON. A draft is validated and re-encoded; an envelope's
// payload is kept byte for byte and must be canonical. Signing again with a
// key that already signed replaces its signature. Sign refuses a signer
// whose public key is not among the root's RootKeys. It checks no existing
// signature: VerifyThreshold does.
func Sign(in []byte, signer crypto.Signer) ([]byte, error) {
	return SignWith(in, signer, nil)
}

// SignWith is Sign that also accepts a root key of previous, the version
// before in's: when root keys rotate, the keys a new version drops must
// still sign it (the previous threshold), although it does not list them.
// previous may be nil; otherwise its Version must be in's minus 1.
func SignWith(in []byte, signer crypto.Signer, previous *Root) ([]byte, error) {
	pub, err := PublicKey(signer)
	if err != nil {
		return nil, err
	}
	env, root, err := openForSigning(in)
	if err != nil {
		return nil, err
	}
	listed := listedKey(root.RootKeys, pub)
	if previous != nil {
		if previous.Version != root.Version-1 {
			return nil, fmt.Errorf("sign trust root v%d: the previous root given is v%d, want v%d", root.Version, previous.Version, root.Version-1)
		}
		listed = listed || listedKey(previous.RootKeys, pub)
	}
	if !listed {
		ids := keyIDs(root.RootKeys)
		if previous != nil {
			ids = append(ids, keyIDs(previous.RootKeys)...)
		}
		return nil, fmt.Errorf("sign trust root v%d: key %s is not one of its root keys (%s): sign with a listed key, list it in the draft, or give the previous version if it is a root key there",
			root.Version, pub.ID, strings.Join(ids, ", "))
	}
	sig, err := signPAE(signer, attest.PAE(env.PayloadType, env.Payload))
	if err != nil {
		return nil, fmt.Errorf("sign trust root v%d with key %s: %w", root.Version, pub.ID, err)
	}
	env.Signatures = slices.DeleteFunc(env.Signatures, func(s attest.Signature) bool { return s.KeyID == pub.ID })
	if len(env.Signatures) >= maxSignatures {
		return nil, fmt.Errorf("sign trust root v%d: the envelope already has %d signatures, the most it may carry", root.Version, len(env.Signatures))
	}
	env.Signatures = append(env.Signatures, attest.Signature{KeyID: pub.ID, Sig: sig})
	return env.Marshal()
}

func listedKey(keys []Key, k Key) bool {
	i := slices.IndexFunc(keys, func(l Key) bool { return l.ID == k.ID })
	return i >= 0 && bytes.Equal(keys[i].PublicKey, k.PublicKey)
}

// openForSigning returns the envelope to add a signature to, without
// signatures for a draft, and its root.
func openForSigning(in []byte) (*attest.Envelope, *Root, error) {
	var probe map[string]json.RawMessage
	if err := strictjson.Decode(in, attest.MaxEnvelopeSize, &probe); err != nil {
		return nil, nil, fmt.Errorf("%w: neither a trust-root draft nor an envelope: %v", ErrMalformed, err)
	}
	if _, ok := probe["payloadType"]; !ok {
		root, err := ParseUnsigned(in)
		if err != nil {
			return nil, nil, fmt.Errorf("trust-root draft: %w", err)
		}
		payload, err := root.Marshal()
		if err != nil {
			return nil, nil, err
		}
		return &attest.Envelope{PayloadType: PayloadType, Payload: payload}, root, nil
	}
	env, root, err := open(in)
	if err != nil {
		return nil, nil, err
	}
	return env, root, nil
}

func signPAE(signer crypto.Signer, pae []byte) ([]byte, error) {
	switch signer.Public().(type) {
	case *ecdsa.PublicKey:
		sum := sha256.Sum256(pae)
		return signer.Sign(rand.Reader, sum[:], crypto.SHA256)
	case ed25519.PublicKey:
		return signer.Sign(rand.Reader, pae, crypto.Hash(0))
	}
	return nil, fmt.Errorf("key type %T is not supported", signer.Public())
}

// Parse reads a trust-root envelope without checking its signatures, for
// display and to learn its version. The payload must be a valid root in
// canonical form. Errors wrap ErrMalformed.
func Parse(envelope []byte) (*Root, error) {
	_, root, err := open(envelope)
	return root, err
}

// open parses an envelope and its root.
func open(envelope []byte) (*attest.Envelope, *Root, error) {
	env, err := attest.ParseEnvelope(envelope)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if env.PayloadType != PayloadType {
		return nil, nil, fmt.Errorf("%w: payload type %q, want %s", ErrMalformed, quote.Prefix(env.PayloadType), PayloadType)
	}
	root, err := ParseUnsigned(env.Payload)
	if err != nil {
		return nil, nil, err
	}
	// Only canonical payloads: every verifier reads the same root from the
	// same bytes, and a version's bytes are unique.
	canon, err := root.Marshal()
	if err != nil {
		return nil, nil, err
	}
	if !bytes.Equal(canon, env.Payload) {
		return nil, nil, fmt.Errorf("%w: payload of v%d is not in canonical form (trustroot.Root.Marshal)", ErrMalformed, root.Version)
	}
	return env, root, nil
}

// VerifyThreshold checks that envelope carries valid signatures from at
// least threshold distinct keys of keys, and returns its root. Signatures by
// other keys, that do not verify, or repeated by one key, do not count.
// Errors wrap ErrMalformed or ErrThreshold.
func VerifyThreshold(envelope []byte, keys []Key, threshold int) (*Root, error) {
	env, root, err := open(envelope)
	if err != nil {
		return nil, err
	}
	if threshold < 1 {
		return nil, fmt.Errorf("%w: threshold %d, want 1 or more", ErrThreshold, threshold)
	}
	pae := attest.PAE(env.PayloadType, env.Payload)
	valid := map[string]bool{}
	var problems []string
	for _, s := range env.Signatures {
		if valid[s.KeyID] {
			continue
		}
		i := slices.IndexFunc(keys, func(k Key) bool { return k.ID == s.KeyID })
		if i < 0 {
			problems = append(problems, fmt.Sprintf("%s is not a root key here", quote.Prefix(s.KeyID)))
			continue
		}
		if err := verify(keys[i], pae, s.Sig); err != nil {
			problems = append(problems, fmt.Sprintf("signature by %s does not verify", s.KeyID))
			continue
		}
		valid[s.KeyID] = true
	}
	if len(valid) < threshold {
		msg := fmt.Sprintf("v%d has %d valid signatures by the root keys %s, %d needed", root.Version, len(valid),
			strings.Join(keyIDs(keys), ", "), threshold)
		if len(problems) > 0 {
			msg += " (" + strings.Join(problems, "; ") + ")"
		}
		return nil, fmt.Errorf("%w: %s", ErrThreshold, msg)
	}
	return root, nil
}

func verify(k Key, msg, sig []byte) error {
	if err := k.check(); err != nil {
		return err
	}
	pub, alg, err := attest.ParsePublicKey(k.PublicKey)
	if err != nil {
		return err
	}
	return attest.VerifySignature(attest.Key{ID: k.ID, Algorithm: alg, Public: pub}, msg, sig)
}

func keyIDs(keys []Key) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return ids
}

// GenerateKey returns a new root key: algorithm is attest.AlgECDSAP256 or
// attest.AlgEd25519.
func GenerateKey(algorithm string) (crypto.Signer, error) {
	switch algorithm {
	case attest.AlgECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case attest.AlgEd25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	}
	return nil, fmt.Errorf("root key algorithm %q: want %s or %s", algorithm, attest.AlgECDSAP256, attest.AlgEd25519)
}

const pemPrivateKey = "PRIVATE KEY"

// MarshalPrivateKey encodes a root key as PKCS#8 PEM. Write it with file
// mode 0600.
func MarshalPrivateKey(signer crypto.Signer) ([]byte, error) {
	if _, err := PublicKey(signer); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, fmt.Errorf("encode root key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// ParsePrivateKey decodes a PKCS#8 PEM root key, ECDSA P-256 or Ed25519.
func ParsePrivateKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != pemPrivateKey {
		return nil, errors.New("parse root key: want a PEM \"PRIVATE KEY\" block (PKCS#8)")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse root key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("parse root key: %T is not supported", k)
	}
	if _, err := PublicKey(s); err != nil {
		return nil, err
	}
	return s, nil
}

// PublicKey returns the public half of a root key as a Key for a root's
// RootKeys.
func PublicKey(signer crypto.Signer) (Key, error) {
	der, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return Key{}, fmt.Errorf("root key: %w", err)
	}
	pub, alg, err := attest.ParsePublicKey(der)
	if err != nil {
		return Key{}, fmt.Errorf("root key: %w", err)
	}
	id, err := attest.KeyID(pub)
	if err != nil {
		return Key{}, err
	}
	return Key{ID: id, Algorithm: alg, PublicKey: der}, nil
}
