package trustroot

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"time"
)

// Trusted is the newest root a verifier accepted, starting from a pinned
// one and moving forward one version at a time. It is safe for concurrent
// use.
type Trusted struct {
	mu       sync.RWMutex
	root     *Root
	envelope []byte
}

// Pin starts from a root the operator pinned (a file shipped out of band).
// It must be signed by its own threshold of its own root keys. An expired
// pinned root is accepted here, so that Update may move past it, but
// Current fails with ErrExpired until a fresh one is accepted.
func Pin(envelope []byte) (*Trusted, error) {
	root, err := Parse(envelope)
	if err != nil {
		return nil, fmt.Errorf("pinned trust root: %w", err)
	}
	if _, err := VerifyThreshold(envelope, root.RootKeys, root.Threshold); err != nil {
		return nil, fmt.Errorf("pinned trust root: %w", err)
	}
	return &Trusted{root: root, envelope: bytes.Clone(envelope)}, nil
}

// PinFile reads the trust root file at path and pins it (Pin); errors
// name the flag the path came from, e.g. "--trust-root".
func PinFile(flag, path string) (*Trusted, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	t, err := Pin(b)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	return t, nil
}

// Update accepts the next version: its Version must be the current one
// plus 1, it must be signed by the current root's threshold of the current
// root keys and by its own threshold of its own root keys, and not be
// expired at now. A lower version, or the same version with other bytes,
// fails with ErrRollback; the current envelope again is a no-op; a higher
// version fails with ErrVersionGap. On any error the current root stays.
func (t *Trusted) Update(envelope []byte, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.update(envelope, now)
}

func (t *Trusted) update(envelope []byte, now time.Time) error {
	cur := t.root
	next, err := Parse(envelope)
	if err != nil {
		return fmt.Errorf("trust root update: %w", err)
	}
	switch {
	case next.Version == cur.Version && bytes.Equal(envelope, t.envelope):
		return nil
	case next.Version <= cur.Version:
		return fmt.Errorf("%w: offered v%d, but v%d is already trusted", ErrRollback, next.Version, cur.Version)
	case next.Version > cur.Version+1:
		return fmt.Errorf("%w: offered v%d, but v%d is trusted: v%d must come first", ErrVersionGap, next.Version, cur.Version, cur.Version+1)
	}
	if _, err := VerifyThreshold(envelope, cur.RootKeys, cur.Threshold); err != nil {
		return fmt.Errorf("trust root v%d is not signed by the root keys of v%d: %w", next.Version, cur.Version, err)
	}
	if _, err := VerifyThreshold(envelope, next.RootKeys, next.Threshold); err != nil {
		return fmt.Errorf("trust root v%d is not signed by its own root keys: %w", next.Version, err)
	}
	if !now.Before(next.Expires) {
		return fmt.Errorf("%w: v%d expired at %s", ErrExpired, next.Version, stamp(next.Expires))
	}
	t.root, t.envelope = next, bytes.Clone(envelope)
	return nil
}

// UpdateChain applies envelopes in order, skipping those at or below the
// current version, and stops at the first that Update refuses, returning
// its error: the versions before it stay accepted.
func (t *Trusted) UpdateChain(envelopes [][]byte, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range envelopes {
		r, err := Parse(e)
		if err != nil {
			return fmt.Errorf("trust root update: %w", err)
		}
		if r.Version <= t.root.Version {
			continue
		}
		if err := t.update(e, now); err != nil {
			return err
		}
	}
	return nil
}

// Current returns the newest accepted root, or fails with ErrExpired if it
// has expired at now: verifiers then freeze until a newer root is accepted.
// The root is shared and must not be modified.
func (t *Trusted) Current(now time.Time) (*Root, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if !now.Before(t.root.Expires) {
		return nil, fmt.Errorf("%w: trust root v%d expired at %s: publish and fetch a newer version (custody trustroot draft, sign, publish)",
			ErrExpired, t.root.Version, stamp(t.root.Expires))
	}
	return t.root, nil
}

// Version returns the version of the newest accepted root.
func (t *Trusted) Version() int64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.root.Version
}

// Envelope returns the envelope of the newest accepted root.
func (t *Trusted) Envelope() []byte {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return bytes.Clone(t.envelope)
}

// Source gives the trust-root envelopes after version after, oldest first,
// unverified: the signer's GetTrustRoot.
type Source interface {
	TrustRoots(ctx context.Context, after int64) ([][]byte, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, after int64) ([][]byte, error)

// TrustRoots calls f.
func (f SourceFunc) TrustRoots(ctx context.Context, after int64) ([][]byte, error) {
	return f(ctx, after)
}

// Refresh asks src for the versions after the current one and applies
// them in order (UpdateChain). It returns the versions before and after; on
// an error (src down, a version refused) the versions accepted so far stay,
// and the error names the version it stayed on. It is the one way every
// verifier (gatekeeper, edges) follows the signer's roots.
func (t *Trusted) Refresh(ctx context.Context, src Source, now time.Time) (from, to int64, err error) {
	from = t.Version()
	roots, err := src.TrustRoots(ctx, from)
	if err != nil {
		return from, from, fmt.Errorf("get trust roots after v%d: %w", from, err)
	}
	if err := t.UpdateChain(roots, now); err != nil {
		return from, t.Version(), fmt.Errorf("refusing trust roots, staying on v%d: %w", t.Version(), err)
	}
	return from, t.Version(), nil
}
