package server_test

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/custody-dev/custody/libs/token"
)

func (f *fixture) boundToken(t *testing.T, cidr string) string {
	t.Helper()
	tok, err := token.Mint(f.key, token.Claims{Digest: f.digest, DecisionID: "d1", Expires: f.now.Add(time.Minute), IssuedAt: f.now,
		ClientRange: netip.MustParsePrefix(cidr)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func getXFF(t *testing.T, url, xff string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A token bound to a client range is served to a client inside it and
// refused (403 client-ip) outside it. The client is the socket peer
// (127.0.0.1 here): an X-Forwarded-For header from an untrusted peer
// changes nothing, in either direction.
func TestClientBoundTokens(t *testing.T) {
	f := start(t)
	for _, tc := range []struct {
		name, cidr, xff string
		want            int
	}{
		{"inside", "127.0.0.0/8", "", http.StatusOK},
		{"exact address", "127.0.0.1/32", "", http.StatusOK},
		{"outside", "203.0.113.0/24", "", http.StatusForbidden},
		{"other family", "2001:db8::/32", "", http.StatusForbidden},
		{"forged header does not widen", "203.0.113.0/24", "203.0.113.9", http.StatusForbidden},
		{"forged header does not narrow", "127.0.0.0/8", "203.0.113.9", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := getXFF(t, f.blobURL(f.digest, f.boundToken(t, tc.cidr)), tc.xff)
			if code != tc.want || (code == http.StatusForbidden && !strings.Contains(body, "another client address")) {
				t.Fatalf("GET = %d %q, want %d", code, body, tc.want)
			}
		})
	}
	if got := testutil.ToFloat64(f.http.Forbidden.WithLabelValues("client-ip")); got != 3 {
		t.Errorf("forbidden{client-ip} = %v, want 3", got)
	}
}

// Behind a trusted proxy the client is the last X-Forwarded-For hop that is
// not a trusted proxy; an unparsable or missing header is refused.
func TestClientBoundTokensBehindATrustedProxy(t *testing.T) {
	f := start(t)
	f.handler.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}
	tok := f.boundToken(t, "203.0.113.0/24")
	for _, tc := range []struct {
		name, xff string
		want      int
	}{
		{"client via the proxy", "203.0.113.9", http.StatusOK},
		{"through two trusted proxies", "203.0.113.9, 10.1.2.3", http.StatusOK},
		{"client's own claim before an untrusted hop", "203.0.113.9, 198.51.100.1", http.StatusForbidden},
		{"outside", "198.51.100.1", http.StatusForbidden},
		{"no header: the proxy is no client", "", http.StatusForbidden},
		{"garbage", "203.0.113.9, not-an-ip", http.StatusForbidden},
		{"only proxies", "10.0.0.1", http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := getXFF(t, f.blobURL(f.digest, tok), tc.xff); code != tc.want {
				t.Fatalf("GET with X-Forwarded-For %q = %d %q, want %d", tc.xff, code, body, tc.want)
			}
		})
	}
}
