package server_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/edgekeys"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
)

// trustKeys pins a root listing edge token keys and returns the edge's
// keys over it.
func trustKeys(t *testing.T, now time.Time, expires time.Time, keys ...trustroot.EdgeTokenKey) *edgekeys.Keys {
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
	return edgekeys.New(edgekeys.Config{Root: pinned, Logger: slog.New(slog.DiscardHandler)})
}

// refusedLines waits for n access lines and returns their refused fields
// (the line is written after the answer).
func (f *fixture) refusedLines(t *testing.T, n int) []string {
	t.Helper()
	var lines []map[string]any
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if lines = f.accessLines(t); len(lines) >= n || time.Now().After(deadline) {
			break
		}
	}
	var out []string
	for _, l := range lines {
		r, _ := l["refused"].(string)
		out = append(out, r)
	}
	return out
}

// The edge takes its token keys from the trust root, each within its
// window: during a rotation tokens of the old key are served until the
// transition window ends, then refused (403 key-outside-window, naming the
// window), while the new key's are served from its start on. A key the
// root never listed stays unknown-key.
func TestTokenKeysFromTheTrustRootHonourTheirWindows(t *testing.T) {
	f := start(t)
	oldPub := f.key.Public().(ed25519.PublicKey)
	newPub, newKey, _ := ed25519.GenerateKey(rand.Reader)
	_, strangerKey, _ := ed25519.GenerateKey(rand.Reader)
	switchAt, until := f.now.Add(-time.Minute), f.now.Add(10*time.Minute)
	oldEntry := trustroottest.EdgeTokenKey(t, oldPub, nil, &until)
	f.handler.Keys = trustKeys(t, f.now, time.Time{}, oldEntry, trustroottest.EdgeTokenKey(t, newPub, &switchAt, nil))

	// The handler's clock moves; f.now (the tokens' issue time) stays. The
	// clock is atomic: the access log of a request reads it after the
	// client has its answer.
	var clock atomic.Int64
	clock.Store(f.now.UnixNano())
	f.handler.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	oldTok, newTok := f.token(t, f.key, f.digest, 15*time.Minute), f.token(t, newKey, f.digest, 15*time.Minute)
	strangerTok := f.token(t, strangerKey, f.digest, 15*time.Minute)
	for _, tok := range []string{oldTok, newTok} {
		if code, body, _ := get(t, http.MethodGet, f.blobURL(f.digest, tok)); code != http.StatusOK {
			t.Fatalf("in the transition window: GET = %d %q, want 200 for both keys", code, body)
		}
	}
	// The old key's window ends: its still unexpired token is refused, as
	// outside its window, not as unknown.
	clock.Store(until.UnixNano())
	code, body, _ := get(t, http.MethodGet, f.blobURL(f.digest, oldTok))
	if code != http.StatusForbidden {
		t.Fatalf("after the transition window: GET with the old key = %d %q, want 403", code, body)
	}
	for _, w := range []string{"outside its window", oldEntry.ID, "valid until " + until.UTC().Format(time.RFC3339), "trust root v1"} {
		if !strings.Contains(body, w) {
			t.Errorf("403 body %q lacks %q", body, w)
		}
	}
	if strings.Contains(body, "unknown key") {
		t.Errorf("403 body %q calls a listed key unknown", body)
	}
	if code, body, _ := get(t, http.MethodGet, f.blobURL(f.digest, newTok)); code != http.StatusOK {
		t.Fatalf("after the transition window: GET with the new key = %d %q, want 200", code, body)
	}
	// A key nobody listed.
	if code, body, _ := get(t, http.MethodGet, f.blobURL(f.digest, strangerTok)); code != http.StatusForbidden || !strings.Contains(body, "unknown key") {
		t.Fatalf("GET with an unlisted key = %d %q, want 403 unknown key", code, body)
	}
	for reason, want := range map[string]float64{"key-outside-window": 1, "unknown-key": 1} {
		if got := testutil.ToFloat64(f.http.Forbidden.WithLabelValues(reason)); got != want {
			t.Errorf("forbidden{%s} = %v, want %v", reason, got, want)
		}
	}
	if got, want := f.refusedLines(t, 5), []string{"", "", "key-outside-window", "", "unknown-key"}; !slices.Equal(got, want) {
		t.Errorf("access log refused = %q, want %q", got, want)
	}
}

// A key not yet valid is refused too, as outside its window.
func TestTokenKeyBeforeItsWindowIsRefused(t *testing.T) {
	f := start(t)
	from := f.now.Add(time.Minute)
	f.handler.Keys = trustKeys(t, f.now, time.Time{}, trustroottest.EdgeTokenKey(t, f.key.Public(), &from, nil))
	code, body, _ := get(t, http.MethodGet, f.blobURL(f.digest, f.token(t, f.key, f.digest, time.Minute)))
	if code != http.StatusForbidden || !strings.Contains(body, "valid from "+from.UTC().Format(time.RFC3339)) {
		t.Fatalf("GET = %d %q, want 403 naming the window", code, body)
	}
	if got := testutil.ToFloat64(f.http.Forbidden.WithLabelValues("key-outside-window")); got != 1 {
		t.Errorf("forbidden{key-outside-window} = %v, want 1", got)
	}
	if got := f.refusedLines(t, 1); !slices.Equal(got, []string{"key-outside-window"}) {
		t.Errorf("access log refused = %q", got)
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
