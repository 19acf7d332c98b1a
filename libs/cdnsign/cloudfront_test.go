package cdnsign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/cloudfront/sign"
)

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

func testRSAKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

const cfURL = "https://d111111abcdef8.cloudfront.net/v1/blobs/sha256/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// TestCloudFrontMatchesSDK compares canned and custom policy URLs and
// cookies with the AWS SDK's own signer (RSA PKCS#1 v1.5 over SHA-1 is
// deterministic, so the outputs must be equal byte for byte).
func TestCloudFrontMatchesSDK(t *testing.T) {
	key := testRSAKey(t)
	ours, err := NewCloudFront("K2JCJMDEHXQW5F", key, crypto.SHA1, nil)
	if err != nil {
		t.Fatal(err)
	}
	sdk := sign.NewURLSigner("K2JCJMDEHXQW5F", key)
	exp := time.Unix(1767225600, 0)
	start := exp.Add(-5 * time.Minute)

	for _, u := range []string{cfURL, cfURL + "?response-content-type=application%2Foctet-stream"} {
		got, err := ours.SignURL(u, exp)
		if err != nil {
			t.Fatal(err)
		}
		want, err := sdk.Sign(u, exp)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("canned URL:\n got %s\nwant %s", got, want)
		}
	}

	cases := []Policy{
		{Resource: cfURL, Expires: exp},
		{Resource: cfURL, Starts: start, Expires: exp},
		{Resource: "https://d111111abcdef8.cloudfront.net/v1/blobs/sha256/*", Expires: exp, ClientRange: netip.MustParsePrefix("192.0.2.0/24")},
		{Resource: cfURL, Starts: start, Expires: exp, ClientRange: netip.MustParsePrefix("2001:db8::/32")},
	}
	for _, p := range cases {
		sp := &sign.Policy{Statements: []sign.Statement{{Resource: p.Resource, Condition: sign.Condition{DateLessThan: sign.NewAWSEpochTime(p.Expires)}}}}
		if !p.Starts.IsZero() {
			sp.Statements[0].Condition.DateGreaterThan = sign.NewAWSEpochTime(p.Starts)
		}
		if p.ClientRange.IsValid() {
			sp.Statements[0].Condition.IPAddress = &sign.IPAddress{SourceIP: p.ClientRange.String()}
		}
		got, err := ours.SignURLPolicy(cfURL, p)
		if err != nil {
			t.Fatal(err)
		}
		want, err := sdk.SignWithPolicy(cfURL, sp)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("custom policy URL %+v:\n got %s\nwant %s", p, got, want)
		}

		cs, err := ours.Cookies(p, false)
		if err != nil {
			t.Fatal(err)
		}
		wcs, err := sign.NewCookieSigner("K2JCJMDEHXQW5F", key).SignWithPolicy(sp)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != len(wcs) {
			t.Fatalf("%d cookies, SDK %d", len(cs), len(wcs))
		}
		for i := range cs {
			if cs[i].Name != wcs[i].Name || cs[i].Value != wcs[i].Value {
				t.Errorf("cookie %d = %s=%s, SDK %s=%s", i, cs[i].Name, cs[i].Value, wcs[i].Name, wcs[i].Value)
			}
			if !cs[i].Secure || !cs[i].HttpOnly || cs[i].Valid() != nil {
				t.Errorf("cookie %s is not Secure, HttpOnly and valid", cs[i].Name)
			}
		}
	}

	// Canned cookies: CloudFront-Expires instead of the policy, and the
	// signature of the canned policy (the one in the SDK's canned URL).
	cs, err := ours.Cookies(Policy{Resource: cfURL, Expires: exp}, true)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := sdk.Sign(cfURL, exp)
	wq, _ := url.ParseQuery(strings.SplitN(want, "?", 2)[1])
	if cs[0].Name != CloudFrontExpiresCookie || cs[0].Value != "1767225600" || cs[1].Value != wq.Get("Signature") || cs[2].Value != "K2JCJMDEHXQW5F" {
		t.Errorf("canned cookies = %v", cs)
	}
}

// cfDecode undoes CloudFront's base64 variant.
func cfDecode(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(strings.NewReplacer("-", "+", "_", "=", "~", "/").Replace(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCloudFrontSHA256AndECDSA checks the options the SDK lacks: SHA-256
// (Hash-Algorithm=SHA256, per the CloudFront Developer Guide) and ECDSA
// P-256 keys, by verifying the signatures with the public keys, and that the
// policy is the SDK's.
func TestCloudFrontSHA256AndECDSA(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Unix(1767225600, 0)
	p := Policy{Resource: cfURL, Expires: exp, ClientRange: netip.MustParsePrefix("198.51.100.0/24")}
	sdkURL, err := sign.NewURLSigner("K1", testRSAKey(t)).SignWithPolicy(cfURL, &sign.Policy{Statements: []sign.Statement{{Resource: cfURL,
		Condition: sign.Condition{DateLessThan: sign.NewAWSEpochTime(exp), IPAddress: &sign.IPAddress{SourceIP: "198.51.100.0/24"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	sq, _ := url.ParseQuery(strings.SplitN(sdkURL, "?", 2)[1])
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		hash crypto.Hash
	}{{"rsa-sha256", testRSAKey(t), crypto.SHA256}, {"ecdsa-sha1", ec, crypto.SHA1}, {"ecdsa-sha256", ec, crypto.SHA256}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewCloudFront("K1", tc.key, tc.hash, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, custom := range []bool{false, true} {
				var got string
				if custom {
					got, err = s.SignURLPolicy(cfURL, p)
				} else {
					got, err = s.SignURL(cfURL, exp)
				}
				if err != nil {
					t.Fatal(err)
				}
				q, _ := url.ParseQuery(strings.SplitN(got, "?", 2)[1])
				if (q.Get("Hash-Algorithm") == "SHA256") != (tc.hash == crypto.SHA256) || q.Get("Key-Pair-Id") != "K1" {
					t.Errorf("URL %s: wrong Hash-Algorithm or Key-Pair-Id", got)
				}
				pol := []byte(`{"Statement":[{"Resource":"` + cfURL + `","Condition":{"DateLessThan":{"AWS:EpochTime":1767225600}}}]}`)
				if custom {
					pol = cfDecode(t, q.Get("Policy"))
					if q.Get("Policy") != sq.Get("Policy") {
						t.Errorf("policy %s differs from the SDK's %s", pol, cfDecode(t, sq.Get("Policy")))
					}
				}
				var sum []byte
				if tc.hash == crypto.SHA256 {
					h := sha256.Sum256(pol)
					sum = h[:]
				} else {
					h := sha1.Sum(pol)
					sum = h[:]
				}
				sig := cfDecode(t, q.Get("Signature"))
				switch k := tc.key.Public().(type) {
				case *rsa.PublicKey:
					err = rsa.VerifyPKCS1v15(k, tc.hash, sum, sig)
				case *ecdsa.PublicKey:
					if !ecdsa.VerifyASN1(k, sum, sig) {
						err = errBadSig
					}
				}
				if err != nil {
					t.Errorf("signature does not verify: %v", err)
				}
			}
			cs, err := s.Cookies(p, false)
			if err != nil {
				t.Fatal(err)
			}
			if tc.hash == crypto.SHA256 {
				if len(cs) != 4 || cs[3].Name != CloudFrontHashCookie || cs[3].Value != "SHA256" {
					t.Errorf("SHA-256 cookies = %v, want CloudFront-Hash-Algorithm=SHA256 last", cs)
				}
			} else if len(cs) != 3 {
				t.Errorf("SHA-1 cookies = %v, want 3", cs)
			}
			if cs[0].Value != sq.Get("Policy") {
				t.Errorf("policy cookie %s differs from the SDK's policy", cs[0].Value)
			}
		})
	}
}

var errBadSig = errors.New("ECDSA signature does not verify")

func TestParseCloudFrontKey(t *testing.T) {
	k := testRSAKey(t)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	p8, _ := x509.MarshalPKCS8PrivateKey(k)
	for _, b := range []*pem.Block{
		{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)},
		{Type: "EC PRIVATE KEY", Bytes: ecDER},
		{Type: "PRIVATE KEY", Bytes: p8},
	} {
		if _, err := ParseCloudFrontKey(pem.EncodeToMemory(b)); err != nil {
			t.Errorf("%s: %v", b.Type, err)
		}
	}
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	for name, in := range map[string][]byte{
		"empty":      nil,
		"garbage":    []byte("not a key"),
		"public key": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}),
		"two blocks": append(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})...),
		"bad DER":    pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{0x30, 0x01}}),
	} {
		if _, err := ParseCloudFrontKey(in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewCloudFront("K1", ec384, crypto.SHA1, nil); err == nil {
		t.Error("P-384 key accepted")
	}
	if _, err := NewCloudFront("K1", small, crypto.SHA1, nil); err == nil {
		t.Error("1024-bit RSA key accepted")
	}
	if _, err := NewCloudFront("K1", k, crypto.MD5, nil); err == nil {
		t.Error("MD5 accepted")
	}
}
