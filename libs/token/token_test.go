package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

const digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
const digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

var now = time.Unix(1_800_000_000, 0)

func keyPair(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func TestMintVerify(t *testing.T) {
	pub, priv := keyPair(t)
	keys := map[string]ed25519.PublicKey{KeyID(pub): pub}
	tok, err := Mint(priv, Claims{Digest: digestA, DecisionID: "d1", Expires: now.Add(time.Minute), IssuedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Verify(tok, keys, digestA, now)
	if err != nil || c.DecisionID != "d1" || c.KeyID != KeyID(pub) {
		t.Fatalf("Verify = %+v, %v", c, err)
	}
	otherPub, otherPriv := keyPair(t)
	forged, _ := Mint(otherPriv, Claims{Digest: digestA, Expires: now.Add(time.Minute)})
	impostor := map[string]ed25519.PublicKey{KeyID(pub): otherPub}
	tests := []struct {
		name   string
		tok    string
		keys   map[string]ed25519.PublicKey
		digest string
		at     time.Time
		want   error
	}{
		{"expired", tok, keys, digestA, now.Add(time.Minute), ErrExpired},
		{"other digest", tok, keys, digestB, now, ErrDigest},
		{"unknown key", forged, keys, digestA, now, ErrUnknownKey},
		{"wrong key for id", tok, impostor, digestA, now, ErrSignature},
		{"empty", "", keys, digestA, now, ErrMalformed},
		{"oversize", prefix + strings.Repeat("A", MaxSize), keys, digestA, now, ErrMalformed},
		{"no version", strings.TrimPrefix(tok, prefix), keys, digestA, now, ErrMalformed},
	}
	for _, tt := range tests {
		if _, err := Verify(tt.tok, tt.keys, tt.digest, tt.at); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	// Every single-byte change is refused.
	for i := range len(tok) {
		for _, c := range []byte{'A', '_', '.', '0'} {
			if tok[i] == c {
				continue
			}
			changed := tok[:i] + string(c) + tok[i+1:]
			if _, err := Verify(changed, keys, digestA, now); err == nil {
				t.Fatalf("token with byte %d changed to %q verified", i, c)
			}
		}
	}
}

func FuzzVerify(f *testing.F) {
	pub, priv := keyPair(f)
	keys := map[string]ed25519.PublicKey{KeyID(pub): pub}
	tok, _ := Mint(priv, Claims{Digest: digestA, Expires: now.Add(time.Hour)})
	f.Add(tok)
	f.Add("v1..")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Verify(s, keys, digestA, now)
		if err == nil && (c.Digest != digestA || !now.Before(c.Expires)) {
			t.Fatalf("accepted a token that does not grant the digest now: %+v", c)
		}
	})
}

// TestVerifyRefusesLooseClaims signs claims that encoding/json alone would
// read (the first two were accepted before the one strict decoder): a
// validly signed token must still have exactly one well-formed claims object.
func TestVerifyRefusesLooseClaims(t *testing.T) {
	pub, priv := keyPair(t)
	keys := map[string]ed25519.PublicKey{KeyID(pub): pub}
	sign := func(body string) string {
		sig := ed25519.Sign(priv, append([]byte(domain), body...))
		return prefix + base64.RawURLEncoding.EncodeToString([]byte(body)) + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	claims := fmt.Sprintf(`{"kid":%q,"digest":%q,"exp":%d,"iat":%d,"decision_id":"d1"}`, KeyID(pub), digestA, now.Add(time.Minute).Unix(), now.Unix())
	if _, err := Verify(sign(claims), keys, digestA, now); err != nil {
		t.Fatalf("well-formed claims: %v", err)
	}
	for name, body := range map[string]string{
		"trailing brace":   claims + "}",
		"trailing bracket": claims + "]",
		"trailing object":  claims + "{}",
		"duplicate digest": strings.Replace(claims, `"digest":`, `"digest":"sha256:other","digest":`, 1),
		"field case":       strings.Replace(claims, `"kid"`, `"KID"`, 1),
		"unknown field":    strings.Replace(claims, `"kid"`, `"x":1,"kid"`, 1),
	} {
		if _, err := Verify(sign(body), keys, digestA, now); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestVerifyRefusesFutureIssueAndLongLifetime(t *testing.T) {
	pub, priv := keyPair(t)
	keys := map[string]ed25519.PublicKey{KeyID(pub): pub}
	mint := func(iat, exp time.Time) string {
		t.Helper()
		tok, err := Mint(priv, Claims{Digest: digestA, Environment: "prod", Expires: exp, IssuedAt: iat})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name     string
		iat, exp time.Time
		want     error
	}{
		{"within skew", now.Add(30 * time.Second), now.Add(10 * time.Minute), nil},
		{"year ahead", now.Add(365 * 24 * time.Hour), now.Add(366 * 24 * time.Hour), ErrIssuedAt},
		{"ten years", now, now.Add(10 * 365 * 24 * time.Hour), ErrLifetime},
		{"just over the limit", now, now.Add(time.Hour + time.Second), ErrLifetime},
		{"no issue time", time.Unix(0, 0), now.Add(time.Minute), ErrLifetime},
		{"negative issue time", time.Unix(-1<<62, 0), time.Unix(1<<62, 0), ErrLifetime},
	}
	for _, tt := range tests {
		c, err := Verify(mint(tt.iat, tt.exp), keys, digestA, now)
		if !errors.Is(err, tt.want) || (err == nil && c.Environment != "prod") {
			t.Errorf("%s: %+v, %v, want %v", tt.name, c, err, tt.want)
		}
	}
	if _, err := VerifyLimits(mint(now, now.Add(2*time.Hour)), keys, digestA, now, Limits{MaxSkew: time.Second, MaxLifetime: 3 * time.Hour}); err != nil {
		t.Errorf("a configured 3h maximum refuses a 2h token: %v", err)
	}
}

// TestDecisionTimeInMilliseconds: the decision time survives to the
// millisecond (edges compare it with stop epochs in the same second); the
// old whole-second claim and a negative time are malformed.
func TestDecisionTimeInMilliseconds(t *testing.T) {
	pub, priv := keyPair(t)
	keys := map[string]ed25519.PublicKey{KeyID(pub): pub}
	decided := now.Add(-1500*time.Millisecond + 123456*time.Nanosecond)
	tok, err := Mint(priv, Claims{Digest: digestA, Expires: now.Add(time.Minute), IssuedAt: now, DecidedAt: decided})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Verify(tok, keys, digestA, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := decided.Truncate(time.Millisecond); !c.DecidedAt.Equal(want) {
		t.Fatalf("DecidedAt = %s, want %s", c.DecidedAt.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
	}
	sign := func(body string) string {
		sig := ed25519.Sign(priv, append([]byte(domain), body...))
		return prefix + base64.RawURLEncoding.EncodeToString([]byte(body)) + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	base := fmt.Sprintf(`{"kid":%q,"digest":%q,"exp":%d,"iat":%d,"decision_id":"d1"`, KeyID(pub), digestA, now.Add(time.Minute).Unix(), now.Unix())
	for name, body := range map[string]string{
		"whole seconds (dat)": base + fmt.Sprintf(`,"dat":%d}`, now.Unix()),
		"negative":            base + `,"dat_ms":-5}`,
	} {
		if _, err := Verify(sign(body), keys, digestA, now); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// A token bound to a client range carries it through Mint and Verify;
// CheckClient admits addresses inside only; a non-canonical or malformed
// range in a signed token is malformed, not ignored.
func TestClientRange(t *testing.T) {
	pub, priv := keyPair(t)
	keys := map[string]ed25519.PublicKey{KeyID(pub): pub}
	for _, tc := range []struct {
		cidr    string
		inside  []string
		outside []string
	}{
		{"203.0.113.0/24", []string{"203.0.113.1", "203.0.113.255", "::ffff:203.0.113.7"}, []string{"203.0.114.1", "10.0.0.1", "2001:db8::1"}},
		{"2001:db8::/48", []string{"2001:db8::1", "2001:db8:0:ffff::1"}, []string{"2001:db9::1", "203.0.113.1"}},
		{"198.51.100.7/32", []string{"198.51.100.7"}, []string{"198.51.100.8"}},
	} {
		p := netip.MustParsePrefix(tc.cidr)
		tok, err := Mint(priv, Claims{Digest: digestA, Expires: now.Add(time.Minute), IssuedAt: now, ClientRange: p})
		if err != nil {
			t.Fatal(err)
		}
		c, err := Verify(tok, keys, digestA, now)
		if err != nil || c.ClientRange != p {
			t.Fatalf("%s: Verify = %+v, %v", tc.cidr, c, err)
		}
		for _, a := range tc.inside {
			if err := c.CheckClient(netip.MustParseAddr(a)); err != nil {
				t.Errorf("%s: client %s refused: %v", tc.cidr, a, err)
			}
		}
		for _, a := range append(tc.outside, "") {
			addr, _ := netip.ParseAddr(a)
			if err := c.CheckClient(addr); !errors.Is(err, ErrClientIP) {
				t.Errorf("%s: client %q = %v, want ErrClientIP", tc.cidr, a, err)
			}
		}
	}
	// Unbound tokens admit any client.
	tok, _ := Mint(priv, Claims{Digest: digestA, Expires: now.Add(time.Minute), IssuedAt: now})
	if c, err := Verify(tok, keys, digestA, now); err != nil || c.CheckClient(netip.MustParseAddr("192.0.2.1")) != nil || strings.Contains(tok, "cip") {
		t.Fatalf("unbound token: %v", err)
	}
	if _, err := Mint(priv, Claims{Digest: digestA, Expires: now.Add(time.Minute), IssuedAt: now, ClientRange: netip.MustParsePrefix("10.0.0.1/8")}); err == nil {
		t.Error("Mint took an unmasked range")
	}
	for _, bad := range []string{"10.0.0.1/8", "10.0.0.0", "10.0.0.0/33", "::ffff:10.0.0.0/104", "010.0.0.0/8", "2001:DB8::/32", "fe80::%eth0/64", " 10.0.0.0/8", "x"} {
		if _, err := ParseClientRange(bad); err == nil {
			t.Errorf("ParseClientRange(%q) accepted", bad)
		}
		body, _ := json.Marshal(claimsJSON{KeyID: KeyID(pub), Digest: digestA, Expires: now.Add(time.Minute).Unix(), IssuedAt: now.Unix(), ClientIP: bad})
		sig := ed25519.Sign(priv, append([]byte(domain), body...))
		forged := prefix + base64.RawURLEncoding.EncodeToString(body) + "." + base64.RawURLEncoding.EncodeToString(sig)
		if _, err := Verify(forged, keys, digestA, now); !errors.Is(err, ErrMalformed) {
			t.Errorf("signed token with cip %q: %v, want ErrMalformed", bad, err)
		}
	}
}
