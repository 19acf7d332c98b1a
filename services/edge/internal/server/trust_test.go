package server_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
	"github.com/custody-dev/custody/services/edge/internal/trust"
)

// trustKeys pins a root listing edge token keys and returns the edge's
// keys over it.
func trustKeys(t *testing.T, now time.Time, expires time.Time, keys ...trustroot.EdgeTokenKey) *trust.Keys {
	t.Helper()
	c := trustroottest.New(t, 1)
	r := c.Root(1, 1, now, nil, nil)
	if !expires.IsZero() {
		r.Expires = expires
	}
	r.EdgeTokenKeys = keys
	pinned, err := trustroot.Pin(c.Sign(t, r))
	if err != nil {
		t.Fatal(err)
	}
	return trust.New(trust.Config{Root: pinned, Logger: slog.New(slog.DiscardHandler)})
}

// The edge takes its token keys from the trust root, each within its
// window: during a rotation tokens of the old key are served until the
// transition window ends, then refused (403), while the new key's are
// served from its start on.
func TestTokenKeysFromTheTrustRootHonourTheirWindows(t *testing.T) {
	f := start(t)
	oldPub := f.key.Public().(ed25519.PublicKey)
	newPub, newKey, _ := ed25519.GenerateKey(rand.Reader)
	switchAt, until := f.now.Add(-time.Minute), f.now.Add(10*time.Minute)
	f.handler.Keys = trustKeys(t, f.now, time.Time{},
		trustroottest.EdgeTokenKey(t, oldPub, nil, &until),
		trustroottest.EdgeTokenKey(t, newPub, &switchAt, nil))

	// The handler's clock moves; f.now (the tokens' issue time) stays. The
	// clock is atomic: the access log of a request reads it after the
	// client has its answer.
	var clock atomic.Int64
	clock.Store(f.now.UnixNano())
	f.handler.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	oldTok, newTok := f.token(t, f.key, f.digest, 15*time.Minute), f.token(t, newKey, f.digest, 15*time.Minute)
	for _, tok := range []string{oldTok, newTok} {
		if code, body, _ := get(t, http.MethodGet, f.blobURL(f.digest, tok)); code != http.StatusOK {
			t.Fatalf("in the transition window: GET = %d %q, want 200 for both keys", code, body)
		}
	}
	// The old key's window ends: its still unexpired token is refused.
	clock.Store(until.UnixNano())
	if code, body, _ := get(t, http.MethodGet, f.blobURL(f.digest, oldTok)); code != http.StatusForbidden || !strings.Contains(body, "unknown key") {
		t.Fatalf("after the transition window: GET with the old key = %d %q, want 403", code, body)
	}
	if code, body, _ := get(t, http.MethodGet, f.blobURL(f.digest, newTok)); code != http.StatusOK {
		t.Fatalf("after the transition window: GET with the new key = %d %q, want 200", code, body)
	}
	if got := testutil.ToFloat64(f.http.Forbidden.WithLabelValues("unknown-key")); got != 1 {
		t.Errorf("forbidden{unknown-key} = %v, want 1", got)
	}
}

// A key not yet valid is refused too.
func TestTokenKeyBeforeItsWindowIsRefused(t *testing.T) {
	f := start(t)
	from := f.now.Add(time.Minute)
	f.handler.Keys = trustKeys(t, f.now, time.Time{}, trustroottest.EdgeTokenKey(t, f.key.Public(), &from, nil))
	if code, body, _ := get(t, http.MethodGet, f.blobURL(f.digest, f.token(t, f.key, f.digest, time.Minute))); code != http.StatusForbidden {
		t.Fatalf("GET = %d %q, want 403", code, body)
	}
}

// Without a trust root that lists edge token keys, or with an expired one,
// the edge serves nothing (503, try another edge) and never reaches the
// origin.
func TestNoTokenKeysFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		expires func(now time.Time) time.Time
		keys    bool
	}{
		{"root lists no edge token key", func(time.Time) time.Time { return time.Time{} }, false},
		{"root expired", func(now time.Time) time.Time { return now.Add(-time.Second) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t)
			var keys []trustroot.EdgeTokenKey
			if tc.keys {
				keys = append(keys, trustroottest.EdgeTokenKey(t, f.key.Public(), nil, nil))
			}
			f.handler.Keys = trustKeys(t, f.now, tc.expires(f.now), keys...)
			code, body, _ := get(t, http.MethodGet, f.blobURL(f.digest, f.token(t, f.key, f.digest, time.Minute)))
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "no token keys") {
				t.Fatalf("GET = %d %q, want 503 naming the missing token keys", code, body)
			}
			if f.pub.fetches.Load() != 0 {
				t.Fatal("the origin was reached")
			}
		})
	}
}
