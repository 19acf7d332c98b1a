package broker_test

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
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
	"github.com/custody-dev/custody/services/cdn-broker/internal/cdns"
)

// TestIssuesCDNURLs: next to the edges' URLs, every configured CDN gets a
// request in its own format, bound to the decision's digest path and the
// token TTL; a denied decision gets none.
func TestIssuesCDNURLs(t *testing.T) {
	dir := t.TempDir()
	gkey, akey := make([]byte, 16), make([]byte, 32)
	rand.Read(gkey)
	rand.Read(akey)
	os.WriteFile(filepath.Join(dir, "g.key"), []byte(base64.URLEncoding.EncodeToString(gkey)), 0o600)
	os.WriteFile(filepath.Join(dir, "a.key"), []byte(hex.EncodeToString(akey)), 0o600)
	cfg := filepath.Join(dir, "cdns.json")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`{"cdns": [
	  {"name": "gcdn", "kind": "cloud-cdn", "base_url": "https://g.example", "key": {"name": "g1", "file": %q}, "cookies": true},
	  {"name": "akamai", "kind": "akamai", "base_url": "https://a.example/dl", "key": {"name": "a1", "file": %q}}]}`,
		filepath.Join(dir, "g.key"), filepath.Join(dir, "a.key"))), 0o600)
	list, err := cdns.Load(t.Context(), cfg, 5*time.Minute, time.Unix(1_800_000_000, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	f := start(t, list...)
	c := f.client(t, "/deployer/alice")
	resp, err := c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetUrls()) != 2 || len(resp.GetCdnUrls()) != 2 {
		t.Fatalf("response %v", resp)
	}
	hexDigest := strings.TrimPrefix(digest, "sha256:")
	exp := strconv.FormatInt(f.now.Add(5*time.Minute).Unix(), 10)

	g := resp.GetCdnUrls()[0]
	if g.GetCdn() != "gcdn" || g.GetKind() != "cloud-cdn" {
		t.Fatalf("first CDN %v", g)
	}
	signed, sig, _ := strings.Cut(g.GetUrl(), "&Signature=")
	m := hmac.New(sha1.New, gkey)
	m.Write([]byte(signed))
	if signed != "https://g.example/v1/blobs/sha256/"+hexDigest+"?Expires="+exp+"&KeyName=g1" || sig != base64.URLEncoding.EncodeToString(m.Sum(nil)) {
		t.Errorf("Cloud CDN URL %s does not verify", g.GetUrl())
	}
	if len(g.GetCookies()) != 1 {
		t.Fatalf("Cloud CDN cookies %v", g.GetCookies())
	}
	ck := g.GetCookies()[0]
	if ck.GetName() != "Cloud-CDN-Cookie" || ck.GetDomain() != "g.example" || ck.GetPath() != "/v1/blobs/sha256/"+hexDigest || !ck.GetExpiresAt().AsTime().Equal(f.now.Add(5*time.Minute)) {
		t.Errorf("cookie %v", ck)
	}

	a := resp.GetCdnUrls()[1]
	u, _ := url.Parse(a.GetUrl())
	path := "/dl/v1/blobs/sha256/" + hexDigest
	want := fmt.Sprintf("st=%d~exp=%s~acl=%s", f.now.Unix(), exp, path)
	m = hmac.New(sha256.New, akey)
	m.Write([]byte(want))
	if a.GetKind() != "akamai" || u.Path != path || u.Query().Get("__token__") != want+"~hmac="+hex.EncodeToString(m.Sum(nil)) {
		t.Errorf("Akamai URL %s does not verify", a.GetUrl())
	}

	_, err = c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: []byte("{}")})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("bad decision: %v", err)
	}
}
