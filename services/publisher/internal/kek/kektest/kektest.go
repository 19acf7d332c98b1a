// Package kektest is the conformance suite every key-encryption back end
// runs against the real thing (soft key file, Vault dev server, a signer
// process on a SoftHSM2 token).
package kektest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/custody-dev/custody/services/publisher/internal/kek"
)

// Backend is a fresh back end and the custodian's operations on it.
type Backend struct {
	KEK kek.KEK
	// Rotate makes a new newest KEK version.
	Rotate func(t *testing.T)
	// Retire makes every version but the newest unusable for unwrapping.
	Retire func(t *testing.T)
}

// Run checks the kek.KEK contract. newBackend is called once per subtest.
func Run(t *testing.T, newBackend func(t *testing.T) Backend) {
	t.Run("WrapUnwrap", func(t *testing.T) {
		b := newBackend(t)
		dk := key()
		w1, err := b.KEK.Wrap(t.Context(), dk)
		if err != nil {
			t.Fatal(err)
		}
		w2, err := b.KEK.Wrap(t.Context(), dk)
		if err != nil {
			t.Fatal(err)
		}
		if w1 == w2 {
			t.Error("two wraps of one key are identical: wrapping is not randomized")
		}
		for _, enc := range []string{hex.EncodeToString(dk), base64.StdEncoding.EncodeToString(dk), base64.RawStdEncoding.EncodeToString(dk), string(dk)} {
			if strings.Contains(w1, enc) {
				t.Fatal("the wrapped key contains the data key")
			}
		}
		for _, w := range []string{w1, w2} {
			got, err := b.KEK.Unwrap(t.Context(), w)
			if err != nil || !bytes.Equal(got, dk) {
				t.Fatalf("Unwrap = %x, %v; want the data key", got, err)
			}
		}
	})
	t.Run("TamperedOrForeignIsErrUnwrap", func(t *testing.T) {
		b := newBackend(t)
		w, err := b.KEK.Wrap(t.Context(), key())
		if err != nil {
			t.Fatal(err)
		}
		flipped := []byte(w)
		i := len(flipped) - 5
		if flipped[i] == 'A' {
			flipped[i] = 'B'
		} else {
			flipped[i] = 'A'
		}
		for _, bad := range []string{string(flipped), w[:len(w)-8], "", "garbage", "soft:v1:AAAA", "vault:v1:AAAA"} {
			if _, err := b.KEK.Unwrap(t.Context(), bad); !errors.Is(err, kek.ErrUnwrap) {
				t.Errorf("Unwrap(%.20q…): %v, want ErrUnwrap", bad, err)
			}
		}
		other := newBackend(t)
		if _, err := other.KEK.Unwrap(t.Context(), w); !errors.Is(err, kek.ErrUnwrap) {
			t.Errorf("Unwrap of another KEK's key: %v, want ErrUnwrap", err)
		}
	})
	t.Run("RewrapRetiresOldVersion", func(t *testing.T) {
		b := newBackend(t)
		dk := key()
		old, err := b.KEK.Wrap(t.Context(), dk)
		if err != nil {
			t.Fatal(err)
		}
		b.Rotate(t)
		nw, err := b.KEK.Rewrap(t.Context(), old)
		if err != nil {
			t.Fatal(err)
		}
		if nw == old {
			t.Fatal("Rewrap after a rotation returned the key under the old version")
		}
		b.Retire(t)
		if got, err := b.KEK.Unwrap(t.Context(), nw); err != nil || !bytes.Equal(got, dk) {
			t.Fatalf("Unwrap of the rewrapped key without the old version: %x, %v", got, err)
		}
		if _, err := b.KEK.Unwrap(t.Context(), old); !errors.Is(err, kek.ErrUnwrap) {
			t.Fatalf("Unwrap under a retired version: %v, want ErrUnwrap", err)
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		b := newBackend(t)
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for range 32 {
			wg.Go(func() {
				dk := key()
				w, err := b.KEK.Wrap(t.Context(), dk)
				if err == nil {
					var got []byte
					got, err = b.KEK.Unwrap(t.Context(), w)
					if err == nil && !bytes.Equal(got, dk) {
						err = errors.New("unwrapped another key")
					}
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	})
}

func key() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}
