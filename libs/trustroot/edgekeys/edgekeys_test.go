package edgekeys_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/edgekeys"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
)

// The edge starts from a pinned root without edge token keys (fail closed),
// then learns the signer's next version, which lists one; a version not
// signed by the pinned root keys is refused and the keys stay.
func TestKeysFollowTheSignersRoots(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	c := trustroottest.New(t, 2)
	v1 := c.Root(1, 2, now, nil, nil)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	v2 := c.Root(2, 2, now, nil, nil)
	v2.EdgeTokenKeys = []trustroot.EdgeTokenKey{trustroottest.EdgeTokenKey(t, pub, nil, nil)}
	pinned, err := trustroot.Pin(c.Sign(t, v1))
	if err != nil {
		t.Fatal(err)
	}
	var served [][]byte
	var down error
	k := edgekeys.New(edgekeys.Config{Root: pinned, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now },
		Source: trustroot.SourceFunc(func(context.Context, int64) ([][]byte, error) { return served, down })})
	if _, err := k.TokenKeys(now); !errors.Is(err, edgekeys.ErrNoKeys) {
		t.Fatalf("TokenKeys on a root without edge keys = %v, want ErrNoKeys", err)
	}
	down = errors.New("unavailable")
	if err := k.Refresh(t.Context()); err == nil {
		t.Fatal("Refresh with the signer down succeeded")
	}
	down = nil
	served = [][]byte{c.Sign(t, v2)}
	if err := k.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	keys, err := k.TokenKeys(now)
	if err != nil || len(keys.Valid) != 1 || k.Version() != 2 {
		t.Fatalf("after the refresh: v%d, %d keys, %v; want v2 with 1 key", k.Version(), len(keys.Valid), err)
	}
	other := trustroottest.New(t, 2)
	v3 := other.Root(3, 2, now, nil, nil)
	served = [][]byte{other.Sign(t, v3)}
	if err := k.Refresh(t.Context()); err == nil || k.Version() != 2 {
		t.Fatalf("a forged v3: Refresh = %v at v%d, want an error and v2", err, k.Version())
	}
	if keys, err := k.TokenKeys(now); err != nil || len(keys.Valid) != 1 {
		t.Fatalf("after a refused update: %d keys, %v", len(keys.Valid), err)
	}
}
