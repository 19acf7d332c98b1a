package broker_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	"github.com/custody-dev/custody/libs/token"
	"github.com/custody-dev/custody/services/cdn-broker/internal/broker"
)

func newTokenKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func TestCurrentTokenKey(t *testing.T) {
	t0 := time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)
	_, a := newTokenKey(t)
	_, b := newTokenKey(t)
	_, c := newTokenKey(t)
	keys := []broker.TokenKey{{Key: b, ValidFrom: t0}, {Key: a}, {Key: c, ValidFrom: t0.Add(time.Hour)}}
	for _, tc := range []struct {
		at   time.Time
		want ed25519.PrivateKey
	}{
		{t0.Add(-time.Nanosecond), a},
		{t0, b}, // from valid-from on, inclusive
		{t0.Add(59 * time.Minute), b},
		{t0.Add(time.Hour), c},
		{t0.Add(24 * time.Hour), c},
	} {
		got, err := broker.CurrentTokenKey(keys, tc.at)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("at %s: got another key (err %v)", tc.at, err)
		}
	}
	if _, err := broker.CurrentTokenKey([]broker.TokenKey{{Key: b, ValidFrom: t0}}, t0.Add(-time.Second)); err == nil ||
		!strings.Contains(err.Error(), "2026-12-31T00:00:00Z") {
		t.Errorf("before every valid-from: %v, want an error naming the earliest", err)
	}
	if _, err := broker.CurrentTokenKey(nil, t0); err == nil {
		t.Error("no keys: no error")
	}
}

// A rotation without a restart: the broker holds the old key and the new one
// with its valid-from; tokens switch keys at that instant, each verifying
// only under its own key; before the earliest valid-from nothing is issued.
func TestTokenKeyRotationWithoutARestart(t *testing.T) {
	oldPub, oldPriv := newTokenKey(t)
	newPub, newPriv := newTokenKey(t)
	switchAt := time.Unix(1_800_000_000, 0).UTC().Add(time.Minute)
	f := startWithKeys(t, []broker.TokenKey{{Key: oldPriv}, {Key: newPriv, ValidFrom: switchAt}})
	issue := func() (string, error) {
		resp, err := f.client(t, "/deployer/alice").IssueDownloadUrl(t.Context(),
			&cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, func(d *attest.Decision) { d.Time = f.now.Add(-time.Second) }))})
		if err != nil {
			return "", err
		}
		u, err := url.Parse(resp.GetUrls()[0])
		if err != nil {
			t.Fatal(err)
		}
		return u.Query().Get("token"), nil
	}
	for _, tc := range []struct {
		at       time.Time
		pub, not ed25519.PublicKey
		desc     string
	}{
		{switchAt.Add(-time.Millisecond), oldPub, newPub, "just before the switch"},
		{switchAt, newPub, oldPub, "at the switch"},
		{switchAt.Add(time.Hour), newPub, oldPub, "after the switch"},
	} {
		f.now = tc.at
		if err := f.stops.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
		tok, err := issue()
		if err != nil {
			t.Fatalf("%s: %v", tc.desc, err)
		}
		if _, err := token.Verify(tok, map[string]ed25519.PublicKey{token.KeyID(tc.pub): tc.pub}, digest, f.now); err != nil {
			t.Errorf("%s: not signed by the expected key: %v", tc.desc, err)
		}
		if _, err := token.Verify(tok, map[string]ed25519.PublicKey{token.KeyID(tc.not): tc.not}, digest, f.now); err == nil {
			t.Errorf("%s: verifies under the other key too", tc.desc)
		}
	}

	// Only a future key: Unavailable naming its valid-from, no URL.
	g := startWithKeys(t, []broker.TokenKey{{Key: newPriv, ValidFrom: switchAt}})
	_, err := g.client(t, "/deployer/alice").IssueDownloadUrl(t.Context(),
		&cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: g.decision.sign(t, g.vsa(t, nil))})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), switchAt.Format(time.RFC3339)) {
		t.Fatalf("before the only key's valid-from: %v, want Unavailable naming %s", err, switchAt.Format(time.RFC3339))
	}
	g.events.mu.Lock()
	defer g.events.mu.Unlock()
	if n := len(g.events.events); n != 0 {
		t.Errorf("%d issuances logged without a URL", n)
	}
}
