package cdns

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// Every kind that can carry a client range gets it inside what is signed;
// the others refuse with ErrNoClientBinding instead of minting unbound.
func TestMintForAClientRange(t *testing.T) {
	k := writeKeys(t)
	cs, err := Load(t.Context(), writeConfig(t, k.dir, allKinds(k)), ttl, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	r24, one := netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("203.0.113.7/32")
	for _, c := range cs {
		s, err := c.MintFor(hexDigest, now, now.Add(ttl), r24)
		switch c.kind {
		case KindCloudCDN, KindAkamai:
			if !errors.Is(err, ErrNoClientBinding) {
				t.Errorf("%s with a /24: %v, want ErrNoClientBinding", c.Name(), err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.Name(), err)
		}
		u, _ := url.Parse(s.URL)
		switch c.kind {
		case KindMediaCDN:
			tok := u.Query().Get("edge-cache-token")
			if !strings.Contains(tok, "IPRanges="+base64.RawURLEncoding.EncodeToString([]byte("203.0.113.0/24"))) {
				t.Errorf("%s: token %q carries no IPRanges", c.Name(), tok)
			}
		case KindCloudFront:
			pol, err := base64.StdEncoding.DecodeString(strings.NewReplacer("-", "+", "_", "=", "~", "/").Replace(u.Query().Get("Policy")))
			if err != nil || !strings.Contains(string(pol), `"IpAddress":{"AWS:SourceIp":"203.0.113.0/24"}`) {
				t.Errorf("%s: policy %s (%v) carries no source IP", c.Name(), pol, err)
			}
			for _, ck := range s.Cookies {
				if ck.Name == "CloudFront-Expires" {
					t.Errorf("%s: a canned-policy cookie for a client-bound request", c.Name())
				}
			}
		}
	}
	for _, c := range cs {
		if c.kind != KindAkamai {
			continue
		}
		s, err := c.MintFor(hexDigest, now, now.Add(ttl), one)
		if err != nil {
			t.Fatal(err)
		}
		if u, _ := url.Parse(s.URL); !strings.HasPrefix(u.Query().Get("__token__"), "ip=203.0.113.7~") {
			t.Errorf("akamai: %s not bound to the address", s.URL)
		}
	}
}
