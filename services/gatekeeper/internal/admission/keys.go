package admission

import (
	"context"
	"errors"
	"fmt"

	"github.com/custody-dev/custody/libs/attest"
)

// keyring caches the signer's public keys. It fetches them on first use and
// again when an envelope does not verify with the cached ones, coalescing
// concurrent refreshes into one call.
type keyring struct {
	signer Signer
	// sem is held while fetching; a channel so that waiters can give up
	// when their context ends.
	sem chan struct{}

	// Guarded by sem.
	keys []attest.Key
	// gen counts successful fetches, so a caller can tell whether the
	// keys changed since it last looked.
	gen uint64
}

func newKeyring(s Signer) *keyring {
	return &keyring{signer: s, sem: make(chan struct{}, 1)}
}

func (k *keyring) lock(ctx context.Context) error {
	select {
	case k.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: wait for the signer's public keys: %w", ErrUnavailable, ctx.Err())
	}
}

func (k *keyring) unlock() { <-k.sem }

// get returns the cached keys and their generation, fetching them if none
// are cached. It fails with ErrUnavailable if it must fetch and cannot:
// without keys nothing can be verified.
func (k *keyring) get(ctx context.Context) ([]attest.Key, uint64, error) {
	if err := k.lock(ctx); err != nil {
		return nil, 0, err
	}
	defer k.unlock()
	if k.gen > 0 {
		return k.keys, k.gen, nil
	}
	return k.fetch(ctx)
}

// refresh fetches the keys again unless someone else did since generation
// seen, and returns the newest.
func (k *keyring) refresh(ctx context.Context, seen uint64) ([]attest.Key, uint64, error) {
	if err := k.lock(ctx); err != nil {
		return nil, 0, err
	}
	defer k.unlock()
	if k.gen != seen {
		return k.keys, k.gen, nil
	}
	return k.fetch(ctx)
}

func (k *keyring) fetch(ctx context.Context) ([]attest.Key, uint64, error) {
	keys, err := k.signer.PublicKeys(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: get public keys from the signer: %w", ErrUnavailable, err)
	}
	if len(keys) == 0 {
		return nil, 0, fmt.Errorf("%w: %w", ErrUnavailable, errors.New("the signer publishes no keys"))
	}
	k.keys, k.gen = keys, k.gen+1
	return k.keys, k.gen, nil
}
