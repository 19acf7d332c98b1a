// Package kek defines key-encryption keys: the back ends that wrap and
// unwrap the publisher's per-artifact data keys (soft keystore, Vault
// Transit, the signer's PKCS#11 HSM).
//
// A back end holds the KEK and never returns it. It decides nothing about
// what a data key protects: callers bind a wrapped key to its blob
// themselves (package sealed tags every key record). A wrapped key names
// the KEK version that wrapped it, so a back end can unwrap keys of every
// version it still has and Rewrap moves a key to the newest version
// without the caller ever seeing it in the clear.
package kek

import (
	"context"
	"errors"
)

// Errors back ends return (wrapped with context).
var (
	// ErrUnavailable: the back end cannot be reached, is sealed or
	// refuses for now. Nothing was wrapped or unwrapped; callers fail
	// closed and retry later (the back end resumes by itself).
	ErrUnavailable = errors.New("key-encryption back end unavailable")
	// ErrUnwrap: the wrapped key is malformed, was wrapped by another
	// KEK, or names a version the back end no longer has. The data it
	// protects cannot be read; callers report an integrity failure.
	ErrUnwrap = errors.New("cannot unwrap data key")
)

// KEK wraps data keys. Implementations are safe for concurrent use.
type KEK interface {
	// Name identifies the back end in errors ("soft", "vault").
	Name() string
	// Wrap encrypts a data key under the newest KEK version.
	Wrap(ctx context.Context, dataKey []byte) (wrapped string, err error)
	// Unwrap decrypts a key Wrap or Rewrap returned.
	Unwrap(ctx context.Context, wrapped string) ([]byte, error)
	// Rewrap re-encrypts a wrapped key under the newest KEK version
	// without returning it in the clear; a key already under the newest
	// version may come back unchanged.
	Rewrap(ctx context.Context, wrapped string) (string, error)
}
