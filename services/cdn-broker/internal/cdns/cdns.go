// Package cdns turns the broker's CDN configuration into signed requests for
// each configured commercial CDN, bound to one digest path and expiry.
//
// It decides nothing about who may download: the broker calls Mint only
// after it has checked an allow decision. Keys are read once at start, from
// files or Vault, and never logged or returned.
package cdns

import (
	"crypto"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/custody-dev/custody/libs/cdnsign"
)

// Kinds of CDN the broker signs for.
const (
	KindCloudCDN   = "cloud-cdn"
	KindMediaCDN   = "media-cdn"
	KindCloudFront = "cloudfront"
	KindAkamai     = "akamai"
)

// ErrNoKey means no configured key of a CDN is usable at the time of the
// request (the new key is not active yet and the previous key has been
// retired): fix the CDN configuration's not_before/until and restart.
var ErrNoKey = errors.New("no usable CDN key")

// Signed is one CDN's signed request.
type Signed struct {
	CDN, Kind, URL string
	// Cookies are set for formats with signed cookies when configured.
	Cookies []*http.Cookie
}

// minter mints for one key of one CDN.
type minter interface {
	mint(rawURL, path string, now, expires time.Time, client netip.Prefix) (string, []*http.Cookie, error)
}

// ErrNoClientBinding means a CDN's format cannot bind a request to the
// client address range asked for: the broker refuses the request rather
// than hand out a URL any client could use.
var ErrNoClientBinding = errors.New("cannot bind to a client address range")

// BindsClient fails with ErrNoClientBinding unless the CDN's format can
// carry client: Media CDN (IPRanges) and CloudFront (a custom policy's
// IpAddress) take any range, Akamai EdgeAuth (ip) one address only, Cloud
// CDN signed URLs and cookies none.
func (c *CDN) BindsClient(client netip.Prefix) error {
	switch {
	case !client.IsValid():
		return nil
	case c.kind == KindMediaCDN || c.kind == KindCloudFront:
		return nil
	case c.kind == KindAkamai && client.IsSingleIP():
		return nil
	case c.kind == KindAkamai:
		return fmt.Errorf("CDN %s (%s): %w %s: EdgeAuth binds one address; ask for a /%d", c.name, c.kind, ErrNoClientBinding, client, client.Addr().BitLen())
	}
	return fmt.Errorf("CDN %s (%s): %w: its signed URLs carry no client address", c.name, c.kind, ErrNoClientBinding)
}

// keyed is a minter with the validity window the configuration gives it.
type keyed struct {
	name      string
	m         minter
	notBefore time.Time // zero: active at once
	until     time.Time // zero: no end (the current key)
}

// CDN is one configured CDN. It is immutable and safe for concurrent use.
type CDN struct {
	name, kind string
	base       *url.URL
	cur        keyed
	prev       *keyed
	purge      *PurgeAccess
}

// Name is the CDN's name in the configuration.
func (c *CDN) Name() string { return c.name }

// String names the CDN and its keys, never their values.
func (c *CDN) String() string {
	s := fmt.Sprintf("%s %s (%s, key %s)", c.kind, c.name, c.base, c.cur.name)
	if c.purge != nil {
		s += ", purged through its API"
	}
	return s
}

// pick returns the key to sign with at now: the current key once it is
// active, before that the previous key while it is still valid.
func (c *CDN) pick(now time.Time) (*keyed, error) {
	if !now.Before(c.cur.notBefore) {
		return &c.cur, nil
	}
	if c.prev != nil && now.Before(c.prev.until) {
		return c.prev, nil
	}
	return nil, fmt.Errorf("%w for CDN %s at %s: key %s is active from %s", ErrNoKey, c.name, now.UTC().Format(time.RFC3339), c.cur.name, c.cur.notBefore.UTC().Format(time.RFC3339))
}

// KeyName returns the name of the key Mint uses at now.
func (c *CDN) KeyName(now time.Time) (string, error) {
	k, err := c.pick(now)
	if err != nil {
		return "", err
	}
	return k.name, nil
}

// Mint returns the CDN's signed request for the blob whose lowercase hex
// digest is hexDigest, valid from now until expires. The path is the one
// edges serve, /v1/blobs/sha256/<hex>, under the CDN's base URL.
func (c *CDN) Mint(hexDigest string, now, expires time.Time) (*Signed, error) {
	return c.MintFor(hexDigest, now, expires, netip.Prefix{})
}

// MintFor is Mint bound to the client address range client (none if
// invalid); it fails with ErrNoClientBinding if the format cannot carry it
// (BindsClient).
func (c *CDN) MintFor(hexDigest string, now, expires time.Time, client netip.Prefix) (*Signed, error) {
	if err := c.BindsClient(client); err != nil {
		return nil, err
	}
	k, err := c.pick(now)
	if err != nil {
		return nil, err
	}
	path := strings.TrimSuffix(c.base.Path, "/") + "/v1/blobs/sha256/" + hexDigest
	raw := c.base.Scheme + "://" + c.base.Host + path
	u, cookies, err := k.m.mint(raw, path, now, expires, client)
	if err != nil {
		return nil, fmt.Errorf("sign for CDN %s with key %s: %w", c.name, k.name, err)
	}
	for _, ck := range cookies {
		ck.Domain, ck.Path = c.base.Hostname(), path
	}
	return &Signed{CDN: c.name, Kind: c.kind, URL: u, Cookies: cookies}, nil
}

type cloudCDN struct {
	s       *cdnsign.CloudCDN
	cookies bool
	// prefix signs a URLPrefix instead of the whole URL.
	prefix bool
}

func (m cloudCDN) mint(raw, _ string, _, exp time.Time, client netip.Prefix) (string, []*http.Cookie, error) {
	if client.IsValid() {
		return "", nil, ErrNoClientBinding // BindsClient refuses first
	}
	var u string
	var err error
	if m.prefix {
		// The prefix is the digest's whole URL, as for the cookie: the
		// signature admits this digest only (a longer path is no digest
		// path, which edges answer with 404).
		u, err = m.s.SignURLPrefix(raw, raw, exp)
	} else {
		u, err = m.s.SignURL(raw, exp)
	}
	if err != nil || !m.cookies {
		return u, nil, err
	}
	// The cookie's prefix is the whole URL: it fetches this digest only.
	ck, err := m.s.SignCookie(raw, exp)
	if err != nil {
		return "", nil, err
	}
	return u, []*http.Cookie{ck}, nil
}

type mediaCDN struct{ s *cdnsign.MediaCDN }

func (m mediaCDN) mint(raw, path string, _, exp time.Time, client netip.Prefix) (string, []*http.Cookie, error) {
	t := cdnsign.Token{FullPath: path, Expires: exp}
	if client.IsValid() {
		t.IPRanges = []netip.Prefix{client}
	}
	tok, err := m.s.DualToken(t)
	if err != nil {
		return "", nil, err
	}
	return raw + "?" + cdnsign.MediaCDNTokenParam + "=" + tok, nil, nil
}

type cloudFront struct {
	s       *cdnsign.CloudFront
	cookies bool
}

func (m cloudFront) mint(raw, _ string, _, exp time.Time, client netip.Prefix) (string, []*http.Cookie, error) {
	if client.IsValid() {
		// A canned policy has no condition but the expiry: a client range
		// needs the custom policy, for the URL and the cookies alike.
		p := cdnsign.Policy{Resource: raw, Expires: exp, ClientRange: client}
		u, err := m.s.SignURLPolicy(raw, p)
		if err != nil || !m.cookies {
			return u, nil, err
		}
		cs, err := m.s.Cookies(p, false)
		if err != nil {
			return "", nil, err
		}
		return u, cs, nil
	}
	u, err := m.s.SignURL(raw, exp)
	if err != nil || !m.cookies {
		return u, nil, err
	}
	cs, err := m.s.Cookies(cdnsign.Policy{Resource: raw, Expires: exp}, true)
	if err != nil {
		return "", nil, err
	}
	return u, cs, nil
}

type akamai struct {
	s       *cdnsign.Akamai
	cookies bool
}

func (m akamai) mint(raw, path string, now, exp time.Time, client netip.Prefix) (string, []*http.Cookie, error) {
	// An ACL of exactly the path (no wildcard) binds the token to this
	// digest; st stops a token from being used before it was issued.
	e := cdnsign.EdgeAuth{ACL: []string{path}, Start: now, End: exp}
	if client.IsValid() {
		if !client.IsSingleIP() {
			return "", nil, ErrNoClientBinding // BindsClient refuses first
		}
		e.IP = client.Addr()
	}
	tok, err := m.s.Token(e)
	if err != nil {
		return "", nil, err
	}
	var cs []*http.Cookie
	if m.cookies {
		cs = []*http.Cookie{{Name: cdnsign.AkamaiTokenName, Value: tok, Expires: exp.UTC(), Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode}}
	}
	return raw + "?" + cdnsign.AkamaiTokenName + "=" + tok, cs, nil
}

// newMinter builds the minter of e's kind for the key keyName whose value
// is text.
func newMinter(e Entry, keyName string, text []byte) (minter, error) {
	switch e.Kind {
	case KindCloudCDN:
		k, err := cdnsign.ParseCloudCDNKey(text)
		if err != nil {
			return nil, err
		}
		s, err := cdnsign.NewCloudCDN(keyName, k)
		if err != nil {
			return nil, err
		}
		return cloudCDN{s, e.Cookies, e.Signature == SignatureURLPrefix}, nil
	case KindMediaCDN:
		k, err := cdnsign.ParseMediaCDNKey(text)
		if err != nil {
			return nil, err
		}
		s, err := cdnsign.NewMediaCDN(keyName, k)
		if err != nil {
			return nil, err
		}
		return mediaCDN{s}, nil
	case KindCloudFront:
		k, err := cdnsign.ParseCloudFrontKey(text)
		if err != nil {
			return nil, err
		}
		h := crypto.SHA1
		if e.Hash == "sha256" {
			h = crypto.SHA256
		}
		s, err := cdnsign.NewCloudFront(keyName, k, h, nil)
		if err != nil {
			return nil, err
		}
		return cloudFront{s, e.Cookies}, nil
	case KindAkamai:
		s, err := cdnsign.NewAkamai(keyName, string(text))
		if err != nil {
			return nil, err
		}
		return akamai{s, e.Cookies}, nil
	}
	return nil, fmt.Errorf("unknown CDN kind %q", e.Kind)
}
