// Package keys is the signer's key back-end interface. A back end holds
// named keys with numbered versions; private halves never leave it. The
// signer decides which version is current, valid or revoked; a back end
// only creates, rotates, lists and signs.
//
// Back ends: keys/vault (HashiCorp Vault Transit), keys/pkcs11 (an HSM
// through PKCS#11) and keys/soft (development only). Each passes the
// conformance suite in keys/keystest.
package keys

import (
	"context"
	"errors"
	"time"

	"github.com/custody-dev/custody/libs/attest"
)

// Algorithms, as named in libs/attest.
const (
	ECDSAP256 = attest.AlgECDSAP256
	Ed25519   = attest.AlgEd25519
)

// Errors every back end wraps, with details saying which back end and what
// to check.
var (
	// ErrUnavailable: the back end cannot be reached or cannot sign now
	// (Vault sealed or down, HSM token missing). Callers fail closed and
	// retry later; the back end recovers by itself when it returns.
	ErrUnavailable = errors.New("key back end unavailable")
	// ErrNotFound: no such key or key version.
	ErrNotFound = errors.New("no such key")
	// ErrExists: Create of a key name that already exists.
	ErrExists = errors.New("key already exists")
	// ErrInvalid: a bad name, algorithm or argument.
	ErrInvalid = errors.New("invalid key request")
)

// Version is the public half of one key version.
type Version struct {
	// Name is the key's name in the back end.
	Name string
	// Version counts from 1 and grows by one per rotation.
	Version int
	// ID is attest.KeyID of the public key: lowercase hex SHA-256 of its
	// PKIX DER encoding.
	ID        string
	Algorithm string
	// PublicDER is the PKIX DER public key.
	PublicDER []byte
	// Created is when the back end created this version (zero if it does
	// not say).
	Created time.Time
}

// Backend is one place keys live.
type Backend interface {
	// Kind names the back end in messages: "vault", "pkcs11", "soft".
	Kind() string
	// Create makes key name with its first version.
	Create(ctx context.Context, name, algorithm string) (Version, error)
	// Rotate adds a version to key name and returns it.
	Rotate(ctx context.Context, name string) (Version, error)
	// Versions lists every version of key name, oldest first.
	Versions(ctx context.Context, name string) ([]Version, error)
	// Sign signs message with one version of key name. ECDSA P-256
	// signatures are ASN.1 DER over SHA-256(message); Ed25519 signatures are
	// over message itself (pure Ed25519).
	Sign(ctx context.Context, name string, version int, message []byte) ([]byte, error)
	// Close releases connections and sessions.
	Close() error
}

// BatchSigner is implemented by back ends that sign many messages in one
// round trip (Vault's batch_input). Signatures come back in order.
type BatchSigner interface {
	SignBatch(ctx context.Context, name string, version int, messages [][]byte) ([][]byte, error)
}

// ValidName reports whether name is acceptable as a key name in every back
// end: 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter.
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > 64 || name[0] < 'a' || name[0] > 'z' {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
