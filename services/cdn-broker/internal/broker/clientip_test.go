package broker_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	"github.com/custody-dev/custody/libs/token"
	"github.com/custody-dev/custody/services/cdn-broker/internal/cdns"
)

// A deployer may bind the URLs to a client range: the edge tokens carry
// it; malformed, non-canonical and too-wide ranges are InvalidArgument.
func TestClientBoundEdgeTokens(t *testing.T) {
	f := start(t)
	c := f.client(t, "/deployer/alice")
	keys := map[string]ed25519.PublicKey{token.KeyID(f.tokenPub): f.tokenPub}
	for _, cidr := range []string{"203.0.113.0/24", "198.51.100.7/32", "2001:db8::/48", "10.0.0.0/8"} {
		resp, err := c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil)), ClientIpRange: cidr})
		if err != nil {
			t.Fatalf("%s: %v", cidr, err)
		}
		for _, raw := range resp.GetUrls() {
			u, _ := url.Parse(raw)
			claims, err := token.Verify(u.Query().Get("token"), keys, digest, f.now)
			if err != nil || claims.ClientRange != netip.MustParsePrefix(cidr) {
				t.Fatalf("%s: token claims %+v, %v", cidr, claims, err)
			}
		}
	}
	for _, bad := range []string{"203.0.113.1/24", "203.0.113.7", "nope", "0.0.0.0/0", "10.0.0.0/7", "::/0", "2001:db8::/31", "::ffff:10.0.0.0/104", "203.0.113.0/24,10.0.0.0/8"} {
		_, err := c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil)), ClientIpRange: bad})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "client_ip_range") {
			t.Errorf("client_ip_range %q: %v, want InvalidArgument", bad, err)
		}
	}
}

// Commercial CDNs: Akamai carries one client address (ip=) and refuses a
// wider range; Cloud CDN carries none, so any range refuses the request
// rather than yield a URL any client could use.
func TestClientBoundCDNURLs(t *testing.T) {
	dir := t.TempDir()
	gkey, akey := make([]byte, 16), make([]byte, 32)
	rand.Read(gkey)
	rand.Read(akey)
	os.WriteFile(filepath.Join(dir, "g.key"), []byte(base64.URLEncoding.EncodeToString(gkey)), 0o600)
	os.WriteFile(filepath.Join(dir, "a.key"), []byte(hex.EncodeToString(akey)), 0o600)
	load := func(body string) []*cdns.CDN {
		cfg := filepath.Join(dir, "cdns.json")
		os.WriteFile(cfg, []byte(body), 0o600)
		list, err := cdns.Load(t.Context(), cfg, 5*time.Minute, time.Unix(1_800_000_000, 0), nil)
		if err != nil {
			t.Fatal(err)
		}
		return list
	}
	akamai := load(fmt.Sprintf(`{"cdns": [{"name": "akamai", "kind": "akamai", "base_url": "https://a.example", "key": {"name": "a1", "file": %q}}]}`, filepath.Join(dir, "a.key")))
	f := start(t, akamai...)
	c := f.client(t, "/deployer/alice")
	resp, err := c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil)), ClientIpRange: "203.0.113.7/32"})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(resp.GetCdnUrls()[0].GetUrl())
	if tok := u.Query().Get("__token__"); !strings.HasPrefix(tok, "ip=203.0.113.7~") {
		t.Fatalf("Akamai token %q is not bound to the client", tok)
	}
	_, err = c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil)), ClientIpRange: "203.0.113.0/24"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "akamai") {
		t.Fatalf("Akamai with a /24: %v, want InvalidArgument naming the CDN", err)
	}

	gcdn := load(fmt.Sprintf(`{"cdns": [{"name": "gcdn", "kind": "cloud-cdn", "base_url": "https://g.example", "key": {"name": "g1", "file": %q}}]}`, filepath.Join(dir, "g.key")))
	f = start(t, gcdn...)
	c = f.client(t, "/deployer/alice")
	_, err = c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil)), ClientIpRange: "203.0.113.7/32"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "gcdn") {
		t.Fatalf("Cloud CDN with a client range: %v, want InvalidArgument naming the CDN", err)
	}
	// Unbound requests still get the Cloud CDN URL.
	if resp, err := c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil))}); err != nil || len(resp.GetCdnUrls()) != 1 {
		t.Fatalf("unbound: %v, %v", resp, err)
	}
}
