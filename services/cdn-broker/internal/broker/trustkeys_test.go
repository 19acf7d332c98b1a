package broker_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	"github.com/custody-dev/custody/libs/token"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
	"github.com/custody-dev/custody/services/cdn-broker/internal/broker"
	"github.com/custody-dev/custody/services/cdn-broker/internal/cdns"
)

// TestEdgeURLsOnlyUnderAKeyTheTrustRootLists: the broker makes edge URLs
// only when the current trust root lists the key it signs with, in a
// window holding now; otherwise FailedPrecondition naming the key and the
// root, counted, with no token and no token.issued event.
func TestEdgeURLsOnlyUnderAKeyTheTrustRootLists(t *testing.T) {
	pub, priv := newTokenKey(t)
	other, _ := newTokenKey(t)
	t0 := time.Unix(1_800_000_000, 0).UTC()
	ended, later := t0.Add(-time.Minute), t0.Add(time.Minute)
	at := t0.Format(time.RFC3339)
	id := token.KeyID(pub)
	for _, tc := range []struct {
		name   string
		listed func(t *testing.T) []trustroot.EdgeTokenKey
		want   []string // in the error; none: URLs
	}{
		{"listed", func(t *testing.T) []trustroot.EdgeTokenKey {
			return []trustroot.EdgeTokenKey{trustroottest.EdgeTokenKey(t, pub, nil, nil)}
		}, nil},
		{"not listed", func(t *testing.T) []trustroot.EdgeTokenKey {
			return []trustroot.EdgeTokenKey{trustroottest.EdgeTokenKey(t, other, nil, nil)}
		}, []string{id, "not listed in trust root v1 for edge tokens at " + at + ": the edges would refuse it"}},
		{"window ended", func(t *testing.T) []trustroot.EdgeTokenKey {
			return []trustroot.EdgeTokenKey{trustroottest.EdgeTokenKey(t, pub, nil, &ended), trustroottest.EdgeTokenKey(t, other, nil, nil)}
		}, []string{id, "not listed in trust root v1 for edge tokens at " + at, "listed valid until " + ended.Format(time.RFC3339), "the edges would refuse it"}},
		{"window not started", func(t *testing.T) []trustroot.EdgeTokenKey {
			return []trustroot.EdgeTokenKey{trustroottest.EdgeTokenKey(t, pub, &later, nil)}
		}, []string{id, "listed valid from " + later.Format(time.RFC3339), "the edges would refuse it"}},
		{"root lists no edge token key", func(*testing.T) []trustroot.EdgeTokenKey { return nil }, []string{id, "lists none", "the edges would refuse it"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startWith(t, []broker.TokenKey{{Key: priv}}, func(f *fixture, c *broker.Config) { c.EdgeKeys = edgeKeys(t, f.now, tc.listed(t)...) })
			resp, err := f.client(t, "/deployer/alice").IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil))})
			f.events.mu.Lock()
			events := len(f.events.events)
			f.events.mu.Unlock()
			refused := testutil.ToFloat64(f.unlisted)
			if got := f.brk.CheckTokenKey(t.Context()); got != (tc.want == nil) {
				t.Errorf("CheckTokenKey = %v", got)
			}
			if tc.want == nil {
				if err != nil || len(resp.GetUrls()) != 2 {
					t.Fatalf("IssueDownloadUrl = %v, %v; want 2 edge URLs", resp, err)
				}
				u, _ := url.Parse(resp.GetUrls()[0])
				if _, err := token.Verify(u.Query().Get("token"), map[string]ed25519.PublicKey{id: pub}, digest, f.now); err != nil {
					t.Errorf("token: %v", err)
				}
				if events != 1 || refused != 0 {
					t.Errorf("%d events, %v refusals; want 1 and 0", events, refused)
				}
				return
			}
			if status.Code(err) != codes.FailedPrecondition || resp != nil {
				t.Fatalf("IssueDownloadUrl = %v, %v; want FailedPrecondition and no URL", resp, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(status.Convert(err).Message(), w) {
					t.Errorf("error %q lacks %q", status.Convert(err).Message(), w)
				}
			}
			if events != 0 || refused != 1 {
				t.Errorf("%d token.issued events, %v refusals counted; want 0 and 1", events, refused)
			}
		})
	}
}

// A broker with commercial CDNs still issues their URLs when its edge
// token key is not listed: they sign with keys of their own. The edges
// are left out, and the issuance logged with none.
func TestUnlistedEdgeKeyLeavesTheCDNsAlone(t *testing.T) {
	dir := t.TempDir()
	akey := make([]byte, 32)
	rand.Read(akey)
	os.WriteFile(filepath.Join(dir, "a.key"), []byte(hex.EncodeToString(akey)), 0o600)
	cfg := filepath.Join(dir, "cdns.json")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`{"cdns": [{"name": "akamai", "kind": "akamai", "base_url": "https://a.example/dl", "key": {"name": "a1", "file": %q}}]}`,
		filepath.Join(dir, "a.key"))), 0o600)
	list, err := cdns.Load(t.Context(), cfg, 5*time.Minute, time.Unix(1_800_000_000, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newTokenKey(t)
	f := startWith(t, nil, func(f *fixture, c *broker.Config) {
		c.EdgeKeys = edgeKeys(t, f.now, trustroottest.EdgeTokenKey(t, other, nil, nil))
	}, list...)
	resp, err := f.client(t, "/deployer/alice").IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil))})
	if err != nil || len(resp.GetUrls()) != 0 || len(resp.GetCdnUrls()) != 1 {
		t.Fatalf("IssueDownloadUrl = %v, %v; want the CDN's URL and no edge URL", resp, err)
	}
	if got := testutil.ToFloat64(f.unlisted); got != 1 {
		t.Errorf("refusals counted %v, want 1", got)
	}
	f.events.mu.Lock()
	defer f.events.mu.Unlock()
	if len(f.events.events) != 1 || f.events.events[0].Details["edges"] != float64(0) {
		t.Errorf("events %v, want one token.issued with edges 0", f.events.events)
	}
}
