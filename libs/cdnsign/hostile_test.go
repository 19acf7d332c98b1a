package cdnsign

import (
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var exp = time.Unix(1767225600, 0)

// TestRefusesHostileURLs: every minter refuses URLs that would let a caller
// smuggle a second signature parameter, a fragment, non-ASCII or white space
// into what is signed.
func TestRefusesHostileURLs(t *testing.T) {
	cc, _ := NewCloudCDN("k", make([]byte, 16))
	mc, _ := NewMediaCDN("k", ed25519.NewKeyFromSeed(make([]byte, 32)))
	cf, err := NewCloudFront("K1", testRSAKey(t), crypto.SHA1, nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := []string{
		"",
		"ftp://h/x",
		"/relative/path",
		"https:///nohost",
		"https://h/x#frag",
		"https://h/x y",
		"https://h/x\n",
		"https://h/\u00e9",
		"https://h/x?Expires=1",
		"https://h/x?KeyName=other",
		"https://h/x?Signature=abc",
		"https://h/x?a=1&URLPrefix=aA",
		"https://h/x?%zz",
		"https://h/" + strings.Repeat("a", 9000),
	}
	cfBad := []string{"https://h/x?Policy=1", "https://h/x?Key-Pair-Id=1", "https://h/x?Hash-Algorithm=SHA1", "https://h/x?Expires=1"}
	for _, u := range bad {
		for name, f := range map[string]func() error{
			"cloudcdn": func() error { _, err := cc.SignURL(u, exp); return err },
			"mediacdn": func() error { _, err := mc.SignURL(u, exp); return err },
		} {
			if err := f(); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s SignURL(%q) err = %v, want ErrInvalid", name, u, err)
			}
		}
	}
	for _, u := range append(cfBad, bad[:8]...) {
		if _, err := cf.SignURL(u, exp); !errors.Is(err, ErrInvalid) {
			t.Errorf("cloudfront SignURL(%q) err = %v, want ErrInvalid", u, err)
		}
	}
	if _, err := mc.SignURL("https://h/x?edge-cache-token=a", exp); err == nil {
		t.Error("Media CDN signed a URL that already has a token")
	}
	if _, err := cc.SignURLPrefix("https://other/x", "https://h/", exp); err == nil {
		t.Error("Cloud CDN signed a URL outside its prefix")
	}
	if _, err := mc.SignURLPrefix("https://other/x", "https://h/", exp); err == nil {
		t.Error("Media CDN signed a URL outside its prefix")
	}
}

func TestRefusesBadTimesAndTokens(t *testing.T) {
	cc, _ := NewCloudCDN("k", make([]byte, 16))
	mc, _ := NewMediaCDN("k", ed25519.NewKeyFromSeed(make([]byte, 32)))
	ak, _ := NewAkamai("k", strings.Repeat("00", 32))
	if _, err := cc.SignURL("https://h/x", time.Unix(0, 0)); err == nil {
		t.Error("expiry at the epoch accepted")
	}
	for name, tok := range map[string]Token{
		"none":          {Expires: exp},
		"two":           {FullPath: "/a", URLPrefix: "https://h/", Expires: exp},
		"tilde path":    {FullPath: "/a~Expires=9", Expires: exp},
		"relative path": {FullPath: "a", Expires: exp},
		"glob comma":    {PathGlobs: []string{"/a,/b"}, Expires: exp},
		"start late":    {FullPath: "/a", Starts: exp, Expires: exp},
		"no expiry":     {FullPath: "/a"},
		"unmasked ip":   {FullPath: "/a", Expires: exp, IPRanges: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}},
		"zero ip":       {FullPath: "/a", Expires: exp, IPRanges: []netip.Prefix{{}}},
	} {
		if _, err := mc.DualToken(tok); !errors.Is(err, ErrInvalid) {
			t.Errorf("DualToken %s: err = %v, want ErrInvalid", name, err)
		}
	}
	for name, e := range map[string]EdgeAuth{
		"none":         {End: exp},
		"both":         {ACL: []string{"/*"}, URL: "/a", End: exp},
		"acl bang":     {ACL: []string{"/a!/b"}, End: exp},
		"acl tilde":    {ACL: []string{"/a~hmac=00"}, End: exp},
		"window alone": {ACL: []string{"/*"}, Window: time.Minute},
		"start late":   {ACL: []string{"/*"}, Start: exp, End: exp},
		"data tilde":   {ACL: []string{"/*"}, End: exp, Data: "x~acl=/*"},
		"session nl":   {ACL: []string{"/*"}, End: exp, SessionID: "a\nb"},
	} {
		if _, err := ak.Token(e); !errors.Is(err, ErrInvalid) {
			t.Errorf("Akamai %s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestRefusesBadKeys(t *testing.T) {
	if _, err := NewCloudCDN("k", make([]byte, 15)); err == nil {
		t.Error("15-byte Cloud CDN key accepted")
	}
	if _, err := NewCloudCDN("bad name", make([]byte, 16)); err == nil {
		t.Error("key name with a space accepted")
	}
	if _, err := NewCloudCDN("k&Signature=x", make([]byte, 16)); err == nil {
		t.Error("key name with '&' accepted")
	}
	if _, err := NewMediaCDN("k", ed25519.PrivateKey(make([]byte, 10))); err == nil {
		t.Error("short Ed25519 key accepted")
	}
	if _, err := ParseMediaCDNKey([]byte("c2hvcnQ")); err == nil {
		t.Error("short Media CDN seed accepted")
	}
	if _, err := ParseCloudCDNKey([]byte("not base64!")); err == nil {
		t.Error("non-base64 Cloud CDN key accepted")
	}
	for _, k := range []string{"", "zz", "00", strings.Repeat("0", 31)} {
		if _, err := NewAkamai("k", k); err == nil {
			t.Errorf("Akamai key %q accepted", k)
		}
	}
}

// TestKeysNeverPrinted: formatting a signer with any verb shows the key's
// name, never its bytes.
func TestKeysNeverPrinted(t *testing.T) {
	secret := []byte("0123456789abcdef")
	cc, _ := NewCloudCDN("cc-key", secret)
	seed := []byte("ed25519-seed-that-is-32-bytes!!!")
	mc, _ := NewMediaCDN("mc-key", ed25519.NewKeyFromSeed(seed))
	ak, _ := NewAkamai("ak-key", hex.EncodeToString(secret))
	cf, _ := NewCloudFront("K1", testRSAKey(t), crypto.SHA1, nil)
	d := testRSAKey(t).D.String()
	for _, s := range []any{cc, mc, ak, cf, *cc, *mc, *ak, *cf} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			out := fmt.Sprintf(verb, s)
			for _, leak := range []string{string(secret), hex.EncodeToString(secret), string(seed), hex.EncodeToString(seed)[:16], d[:20]} {
				if strings.Contains(out, leak) {
					t.Fatalf("%s of %T prints key material: %s", verb, s, out)
				}
			}
			if !strings.Contains(out, "key") {
				t.Errorf("%s of %T = %q, want the key's name", verb, s, out)
			}
		}
	}
}

// The key parsers read operator-supplied files; fuzz them so that no input
// panics and every accepted key is usable.

func FuzzParseCloudCDNKey(f *testing.F) {
	f.Add([]byte("nZtRohdNF9m3cKM24IcK4w=="))
	f.Add([]byte(" \n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseCloudCDNKey(b)
		if err != nil {
			return
		}
		if s, err := NewCloudCDN("k", k); err == nil {
			if _, err := s.SignURL("https://h/x", exp); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzParseMediaCDNKey(f *testing.F) {
	f.Add([]byte("DJUcnLguVFKmVCFnWGubG1MZg7fWAnxacMjKDhVZMGI="))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseMediaCDNKey(b)
		if err != nil {
			return
		}
		if _, err := NewMediaCDN("k", k); err != nil {
			t.Fatalf("parsed key refused: %v", err)
		}
	})
}

func FuzzParseCloudFrontKey(f *testing.F) {
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseCloudFrontKey(b)
		if err != nil {
			return
		}
		_, _ = NewCloudFront("K1", k, crypto.SHA1, nil)
	})
}

// TestMediaCDNStartsAndIPRanges checks the optional fields against the
// field order and encoding of Google's dual-token samples by verifying the
// Ed25519 signature over the string they sign.
func TestMediaCDNStartsAndIPRanges(t *testing.T) {
	key := ed25519.NewKeyFromSeed(make([]byte, 32))
	mc, _ := NewMediaCDN("k", key)
	start := exp.Add(-5 * time.Minute)
	tok, err := mc.DualToken(Token{FullPath: "/v1/blobs/sha256/ab", Starts: start, Expires: exp,
		IPRanges: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32")}})
	if err != nil {
		t.Fatal(err)
	}
	ranges := base64.RawURLEncoding.EncodeToString([]byte("203.0.113.0/24,2001:db8::/32"))
	head := fmt.Sprintf("FullPath~Starts=%d~Expires=%d~IPRanges=%s~Signature=", start.Unix(), exp.Unix(), ranges)
	sig, ok := strings.CutPrefix(tok, head)
	if !ok {
		t.Fatalf("token %q, want prefix %q", tok, head)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(sig)
	signed := fmt.Sprintf("FullPath=/v1/blobs/sha256/ab~Starts=%d~Expires=%d~IPRanges=%s", start.Unix(), exp.Unix(), ranges)
	if !ed25519.Verify(mc.Public(), []byte(signed), raw) {
		t.Error("signature does not cover the signed fields")
	}
	if ed25519.Verify(mc.Public(), []byte(strings.Replace(signed, "/ab", "/cd", 1)), raw) {
		t.Error("signature verifies for another path")
	}
}
