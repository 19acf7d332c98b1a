// Package attest builds, parses and verifies Custody's attestations: in-toto
// Statement v1 documents with SLSA Provenance v1 or Verification Summary
// predicates, signed as DSSE envelopes.
package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/strictjson"
)

// PayloadType is the DSSE payload type of in-toto statements.
const PayloadType = "application/vnd.in-toto+json"

// MaxEnvelopeSize bounds the envelopes and statements this package parses.
const MaxEnvelopeSize = 1 << 20

// Key purposes: a key signs for one purpose only.
const (
	PurposeArtifact = "artifact"
	PurposeDecision = "decision"
	// PurposeBackup keys sign backup-set manifests (BackupPredicateType).
	PurposeBackup = "backup"
)

// Signature algorithms.
const (
	AlgECDSAP256 = "ecdsa-p256-sha256"
	AlgEd25519   = "ed25519"
)

// Errors returned by verification. They are wrapped with details.
var (
	ErrMalformed    = errors.New("malformed attestation")
	ErrUnknownKey   = errors.New("signed by a key that is not trusted")
	ErrBadSignature = errors.New("signature does not verify")
)

// Envelope is a DSSE envelope.
type Envelope struct {
	PayloadType string
	Payload     []byte
	Signatures  []Signature
}

// Signature is one DSSE signature.
type Signature struct {
	KeyID string
	Sig   []byte
}

type envelopeJSON struct {
	PayloadType string          `json:"payloadType"`
	Payload     string          `json:"payload"`
	Signatures  []signatureJSON `json:"signatures"`
}

type signatureJSON struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"`
}

// PAE is DSSE's pre-authentication encoding of a payload: what is signed.
func PAE(payloadType string, payload []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "DSSEv1 %d %s %d ", len(payloadType), payloadType, len(payload))
	b.Write(payload)
	return b.Bytes()
}

// ParseEnvelope parses a DSSE envelope of at most MaxEnvelopeSize bytes. It
// rejects unknown fields, trailing data, bad base64 and envelopes without
// signatures.
func ParseEnvelope(b []byte) (*Envelope, error) {
	var ej envelopeJSON
	if err := strictjson.Decode(b, MaxEnvelopeSize, &ej); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if ej.PayloadType == "" {
		return nil, fmt.Errorf("%w: envelope has no payloadType", ErrMalformed)
	}
	payload, err := base64.StdEncoding.DecodeString(ej.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: envelope payload is not base64: %v", ErrMalformed, err)
	}
	if len(ej.Signatures) == 0 || len(ej.Signatures) > 16 {
		return nil, fmt.Errorf("%w: envelope has %d signatures, want 1 to 16", ErrMalformed, len(ej.Signatures))
	}
	e := &Envelope{PayloadType: ej.PayloadType, Payload: payload}
	for i, s := range ej.Signatures {
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil || len(sig) == 0 {
			return nil, fmt.Errorf("%w: signature %d is empty or not base64", ErrMalformed, i)
		}
		e.Signatures = append(e.Signatures, Signature{KeyID: s.KeyID, Sig: sig})
	}
	return e, nil
}

// Marshal encodes the envelope as DSSE JSON.
func (e *Envelope) Marshal() ([]byte, error) {
	ej := envelopeJSON{PayloadType: e.PayloadType, Payload: base64.StdEncoding.EncodeToString(e.Payload)}
	for _, s := range e.Signatures {
		ej.Signatures = append(ej.Signatures, signatureJSON{KeyID: s.KeyID, Sig: base64.StdEncoding.EncodeToString(s.Sig)})
	}
	return json.Marshal(ej)
}

// SignEnvelope signs payload with sign, which receives the PAE bytes and
// returns the signature, and returns the DSSE envelope JSON.
func SignEnvelope(payloadType string, payload []byte, keyID string, sign func(pae []byte) ([]byte, error)) ([]byte, error) {
	sig, err := sign(PAE(payloadType, payload))
	if err != nil {
		return nil, fmt.Errorf("sign envelope with key %s: %w", keyID, err)
	}
	e := Envelope{PayloadType: payloadType, Payload: payload, Signatures: []Signature{{KeyID: keyID, Sig: sig}}}
	return e.Marshal()
}

// Key is a public verification key.
type Key struct {
	ID        string
	Purpose   string
	Algorithm string
	Public    crypto.PublicKey
	ValidFrom time.Time
}

// KeyID returns the lowercase hex SHA-256 of the key's PKIX DER encoding.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// ParsePublicKey parses a PKIX DER public key and names its algorithm. Only
// ECDSA P-256 and Ed25519 keys are accepted.
func ParsePublicKey(der []byte) (crypto.PublicKey, string, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, "", fmt.Errorf("parse public key: %w", err)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, "", fmt.Errorf("parse public key: ECDSA curve %s is not supported, want P-256", k.Curve.Params().Name)
		}
		return k, AlgECDSAP256, nil
	case ed25519.PublicKey:
		return k, AlgEd25519, nil
	default:
		return nil, "", fmt.Errorf("parse public key: %T is not supported", pub)
	}
}

// VerifySignature checks sig over msg with k: ECDSA P-256 signatures are
// ASN.1 DER over SHA-256(msg), Ed25519 signatures are over msg.
func VerifySignature(k Key, msg, sig []byte) error {
	switch pub := k.Public.(type) {
	case *ecdsa.PublicKey:
		if k.Algorithm != AlgECDSAP256 {
			break
		}
		sum := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(pub, sum[:], sig) {
			return fmt.Errorf("%w: key %s", ErrBadSignature, k.ID)
		}
		return nil
	case ed25519.PublicKey:
		if k.Algorithm != AlgEd25519 {
			break
		}
		if !ed25519.Verify(pub, msg, sig) {
			return fmt.Errorf("%w: key %s", ErrBadSignature, k.ID)
		}
		return nil
	}
	return fmt.Errorf("%w: key %s has algorithm %q and type %T", ErrBadSignature, k.ID, k.Algorithm, k.Public)
}

// Verify checks that at least one signature is by a key in keys with the
// given purpose and verifies over the PAE, and returns that key's ID. The
// error says which key IDs were tried and why each failed.
func (e *Envelope) Verify(keys []Key, purpose string) (string, error) {
	pae := PAE(e.PayloadType, e.Payload)
	var errs []string
	known := false // some signature was by a trusted key but did not verify
	for _, s := range e.Signatures {
		i := slices.IndexFunc(keys, func(k Key) bool { return k.ID == s.KeyID && k.Purpose == purpose })
		if i < 0 {
			errs = append(errs, fmt.Sprintf("%q is not a trusted %s key", quote.Prefix(s.KeyID), purpose))
			continue
		}
		if err := VerifySignature(keys[i], pae, s.Sig); err != nil {
			known = true
			errs = append(errs, fmt.Sprintf("signature by key %s does not verify", s.KeyID))
			continue
		}
		return keys[i].ID, nil
	}
	sentinel := ErrUnknownKey
	if known {
		sentinel = ErrBadSignature
	}
	return "", fmt.Errorf("%w: %s", sentinel, strings.Join(errs, "; "))
}
