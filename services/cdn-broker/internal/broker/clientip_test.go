package broker_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
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

// CloudFront and Media CDN carry any client range through IssueDownloadUrl:
// CloudFront in a custom policy's IpAddress.AWS:SourceIp (URL and cookies),
// Media CDN in the token's IPRanges, each inside what is signed and
// verified here with the public key; without a range neither carries one
// (CloudFront falls back to its canned policy).
func TestClientBoundCloudFrontAndMediaCDNURLs(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	eder, _ := x509.MarshalECPrivateKey(ek)
	seed := make([]byte, ed25519.SeedSize)
	rand.Read(seed)
	mediaPub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	cfg := write("cdns.json", []byte(fmt.Sprintf(`{"cdns": [
	  {"name": "cf", "kind": "cloudfront", "base_url": "https://d111.cloudfront.net", "key": {"name": "K2JCJMDEHXQW5F", "file": %q}, "cookies": true},
	  {"name": "cf256", "kind": "cloudfront", "base_url": "https://d222.cloudfront.net/dl", "hash": "sha256", "key": {"name": "K3EC", "file": %q}},
	  {"name": "media", "kind": "media-cdn", "base_url": "https://media.example.com/custody", "key": {"name": "mkey", "file": %q}}]}`,
		write("cf.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})),
		write("cf256.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: eder})),
		write("media.key", []byte(base64.RawURLEncoding.EncodeToString(seed))))))
	list, err := cdns.Load(t.Context(), cfg, 5*time.Minute, time.Unix(1_800_000_000, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	f := start(t, list...)
	c := f.client(t, "/deployer/alice")
	hexDigest := strings.TrimPrefix(digest, "sha256:")
	exp := f.now.Add(5 * time.Minute).Unix()
	cfDecode := func(s string) []byte {
		b, err := base64.StdEncoding.DecodeString(strings.NewReplacer("-", "+", "_", "=", "~", "/").Replace(s))
		if err != nil {
			t.Fatalf("CloudFront base64 %q: %v", s, err)
		}
		return b
	}
	// cfVerify checks sig over policy with the key of the CDN named cdn.
	cfVerify := func(cdn string, policy, sig []byte) bool {
		if cdn == "cf" {
			h := sha1.Sum(policy)
			return rsa.VerifyPKCS1v15(&rk.PublicKey, crypto.SHA1, h[:], sig) == nil
		}
		h := sha256.Sum256(policy)
		return ecdsa.VerifyASN1(&ek.PublicKey, h[:], sig)
	}

	for _, cidr := range []string{"203.0.113.0/24", "198.51.100.7/32", "2001:db8::/48", ""} {
		resp, err := c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil)), ClientIpRange: cidr})
		if err != nil {
			t.Fatalf("%q: %v", cidr, err)
		}
		if len(resp.GetCdnUrls()) != 3 {
			t.Fatalf("%q: %d CDN URLs, want 3", cidr, len(resp.GetCdnUrls()))
		}
		for _, cu := range resp.GetCdnUrls()[:2] {
			raw, query, _ := strings.Cut(cu.GetUrl(), "?")
			q, err := url.ParseQuery(query)
			if err != nil {
				t.Fatal(err)
			}
			wantRaw := "https://d111.cloudfront.net/v1/blobs/sha256/" + hexDigest
			if cu.GetCdn() == "cf256" {
				wantRaw = "https://d222.cloudfront.net/dl/v1/blobs/sha256/" + hexDigest
			}
			if cu.GetKind() != "cloudfront" || raw != wantRaw || q.Get("Key-Pair-Id") != map[string]string{"cf": "K2JCJMDEHXQW5F", "cf256": "K3EC"}[cu.GetCdn()] ||
				(q.Get("Hash-Algorithm") == "SHA256") != (cu.GetCdn() == "cf256") {
				t.Fatalf("%q: %s URL %s", cidr, cu.GetCdn(), cu.GetUrl())
			}
			sig := cfDecode(q.Get("Signature"))
			if cidr == "" {
				// Canned policy: the signed statement has the resource and
				// the expiry only.
				canned := fmt.Sprintf(`{"Statement":[{"Resource":"%s","Condition":{"DateLessThan":{"AWS:EpochTime":%d}}}]}`, wantRaw, exp)
				if q.Has("Policy") || q.Get("Expires") != strconv.FormatInt(exp, 10) || !cfVerify(cu.GetCdn(), []byte(canned), sig) {
					t.Errorf("unbound %s URL %s is not a verifying canned-policy URL", cu.GetCdn(), cu.GetUrl())
				}
				continue
			}
			policy := cfDecode(q.Get("Policy"))
			var p struct {
				Statement []struct {
					Resource  string
					Condition struct {
						IPAddress    map[string]string `json:"IpAddress"`
						DateLessThan map[string]int64
					}
				}
			}
			if err := json.Unmarshal(policy, &p); err != nil || len(p.Statement) != 1 {
				t.Fatalf("%s policy %s: %v", cu.GetCdn(), policy, err)
			}
			st := p.Statement[0]
			if st.Resource != wantRaw || st.Condition.IPAddress["AWS:SourceIp"] != cidr || len(st.Condition.IPAddress) != 1 || st.Condition.DateLessThan["AWS:EpochTime"] != exp {
				t.Errorf("%q: %s policy %s", cidr, cu.GetCdn(), policy)
			}
			if q.Has("Expires") || !cfVerify(cu.GetCdn(), policy, sig) {
				t.Errorf("%q: %s signature does not verify over the policy %s", cidr, cu.GetCdn(), policy)
			}
			if cu.GetCdn() == "cf" {
				// The cookies carry the same custom policy, never a canned one.
				got := map[string]string{}
				for _, ck := range cu.GetCookies() {
					got[ck.GetName()] = ck.GetValue()
				}
				if len(got) != 3 || got["CloudFront-Policy"] != q.Get("Policy") || got["CloudFront-Signature"] != q.Get("Signature") || got["CloudFront-Key-Pair-Id"] != "K2JCJMDEHXQW5F" {
					t.Errorf("%q: cf cookies %v", cidr, got)
				}
			}
		}

		m := resp.GetCdnUrls()[2]
		path := "/custody/v1/blobs/sha256/" + hexDigest
		raw, query, _ := strings.Cut(m.GetUrl(), "?")
		tok, ok := strings.CutPrefix(query, "edge-cache-token=")
		if m.GetKind() != "media-cdn" || raw != "https://media.example.com"+path || !ok {
			t.Fatalf("%q: Media CDN URL %s", cidr, m.GetUrl())
		}
		fields := strings.Split(tok, "~")
		signed := []string{"FullPath=" + path, "Expires=" + strconv.FormatInt(exp, 10)}
		want := []string{"FullPath", signed[1]}
		if cidr != "" {
			ranges := "IPRanges=" + base64.RawURLEncoding.EncodeToString([]byte(cidr))
			signed, want = append(signed, ranges), append(want, ranges)
		}
		if len(fields) != len(want)+1 || strings.Join(fields[:len(want)], "~") != strings.Join(want, "~") {
			t.Fatalf("%q: Media CDN token %q, want fields %q", cidr, tok, want)
		}
		sig, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(fields[len(want)], "Signature="))
		if err != nil || !ed25519.Verify(mediaPub, []byte(strings.Join(signed, "~")), sig) {
			t.Errorf("%q: Media CDN token %q does not verify over %q", cidr, tok, strings.Join(signed, "~"))
		}
	}
}
