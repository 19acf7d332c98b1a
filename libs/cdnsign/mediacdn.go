package cdnsign

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// MediaCDNTokenParam is the query parameter that carries a Media CDN
// dual-token (short) token.
const MediaCDNTokenParam = "edge-cache-token"

// MediaCDN signs requests for Google Media CDN with an Ed25519 key that a
// keyset names. Two formats from Google's "Signed requests" and "Generate
// tokens" pages: the signed URL (Expires, KeyName, Signature; URLPrefix for
// prefix signatures) and the dual-token edge-cache-token
// (FullPath|URLPrefix|PathGlobs, Starts, Expires, IPRanges, Signature,
// separated by '~'). Signatures are base64url without padding.
type MediaCDN struct {
	keyName string
	key     ed25519.PrivateKey
}

// NewMediaCDN returns a signer for the keyset key keyName.
func NewMediaCDN(keyName string, key ed25519.PrivateKey) (*MediaCDN, error) {
	if err := checkName("Media CDN key name", keyName); err != nil {
		return nil, err
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, invalid("Media CDN key %q is not an Ed25519 private key", keyName)
	}
	return &MediaCDN{keyName: keyName, key: append(ed25519.PrivateKey(nil), key...)}, nil
}

// ParseMediaCDNKey decodes the 32-byte Ed25519 seed in base64url (padding
// optional), the form Google's samples and keysets use.
func ParseMediaCDNKey(text []byte) (ed25519.PrivateKey, error) {
	s := strings.TrimRight(strings.TrimSpace(string(text)), "=")
	seed, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, invalid("Media CDN key must be a 32-byte Ed25519 seed in base64url")
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// String names the key, never its value.
func (m MediaCDN) String() string { return fmt.Sprintf("MediaCDN(key %s)", m.keyName) }

// GoString names the key, never its value.
func (m MediaCDN) GoString() string { return m.String() }

// Public returns the public key to add to the Media CDN keyset.
func (m *MediaCDN) Public() ed25519.PublicKey { return m.key.Public().(ed25519.PublicKey) }

func (m *MediaCDN) sign(s string) string {
	return base64.RawURLEncoding.EncodeToString(ed25519.Sign(m.key, []byte(s)))
}

var mediaCDNReserved = []string{"Expires", "KeyName", "Signature", "URLPrefix", MediaCDNTokenParam}

// SignURL returns rawURL signed until expires (the signature covers the whole
// URL).
func (m *MediaCDN) SignURL(rawURL string, expires time.Time) (string, error) {
	if _, err := checkURL(rawURL, mediaCDNReserved...); err != nil {
		return "", err
	}
	if err := checkExpiry(time.Time{}, expires); err != nil {
		return "", err
	}
	s := rawURL + sep(rawURL) + "Expires=" + strconv.FormatInt(expires.Unix(), 10) + "&KeyName=" + m.keyName
	return s + "&Signature=" + m.sign(s), nil
}

// SignURLPrefix returns rawURL with a signature for every URL that starts
// with prefix; rawURL must start with prefix.
func (m *MediaCDN) SignURLPrefix(rawURL, prefix string, expires time.Time) (string, error) {
	if _, err := checkURL(rawURL, mediaCDNReserved...); err != nil {
		return "", err
	}
	if _, err := checkURL(prefix, mediaCDNReserved...); err != nil {
		return "", fmt.Errorf("URL prefix: %w", err)
	}
	if !strings.HasPrefix(rawURL, prefix) {
		return "", invalid("URL does not start with the prefix it is signed for")
	}
	if err := checkExpiry(time.Time{}, expires); err != nil {
		return "", err
	}
	p := "URLPrefix=" + base64.URLEncoding.EncodeToString([]byte(prefix)) + "&Expires=" + strconv.FormatInt(expires.Unix(), 10) + "&KeyName=" + m.keyName
	return rawURL + sep(rawURL) + p + "&Signature=" + m.sign(p), nil
}

// Token is what a Media CDN dual token grants. Exactly one of FullPath,
// URLPrefix and PathGlobs is set.
type Token struct {
	// FullPath is the one path allowed, starting with '/'. It is signed but
	// not repeated in the token (the CDN signs the request's path).
	FullPath string
	// URLPrefix allows every URL starting with it (scheme and host included).
	URLPrefix string
	// PathGlobs allows paths matching any of these globs (on any host).
	PathGlobs []string
	// Starts is optional; the token is refused before it.
	Starts time.Time
	// Expires is required.
	Expires time.Time
	// IPRanges optionally restricts the client addresses.
	IPRanges []netip.Prefix
}

// DualToken returns the value of an edge-cache-token for t.
func (m *MediaCDN) DualToken(t Token) (string, error) {
	var token, signed []string
	add := func(f string) { token, signed = append(token, f), append(signed, f) }
	n := 0
	for _, set := range []bool{t.FullPath != "", t.URLPrefix != "", len(t.PathGlobs) > 0} {
		if set {
			n++
		}
	}
	if n != 1 {
		return "", invalid("a Media CDN token needs exactly one of full path, URL prefix and path globs")
	}
	switch {
	case t.FullPath != "":
		if err := checkTokenPath(t.FullPath); err != nil {
			return "", err
		}
		token, signed = append(token, "FullPath"), append(signed, "FullPath="+t.FullPath)
	case t.URLPrefix != "":
		if _, err := checkURL(t.URLPrefix); err != nil {
			return "", fmt.Errorf("URL prefix: %w", err)
		}
		add("URLPrefix=" + base64.RawURLEncoding.EncodeToString([]byte(t.URLPrefix)))
	default:
		for _, g := range t.PathGlobs {
			if err := checkTokenPath(g); err != nil || strings.ContainsAny(g, ",!") {
				return "", invalid("path glob %q: want /path with no '~', ',', '!' or spaces", g)
			}
		}
		add("PathGlobs=" + strings.Join(t.PathGlobs, ","))
	}
	if err := checkExpiry(t.Starts, t.Expires); err != nil {
		return "", err
	}
	if !t.Starts.IsZero() {
		add("Starts=" + strconv.FormatInt(t.Starts.Unix(), 10))
	}
	add("Expires=" + strconv.FormatInt(t.Expires.Unix(), 10))
	if len(t.IPRanges) > 0 {
		r, err := joinPrefixes(t.IPRanges)
		if err != nil {
			return "", err
		}
		add("IPRanges=" + base64.RawURLEncoding.EncodeToString([]byte(r)))
	}
	token = append(token, "Signature="+m.sign(strings.Join(signed, "~")))
	return strings.Join(token, "~"), nil
}

// checkTokenPath accepts an absolute path of printable ASCII that cannot
// break out of a '~'-separated field.
func checkTokenPath(p string) error {
	if !strings.HasPrefix(p, "/") || len(p) > 2048 {
		return invalid("path %q must start with '/' and be at most 2048 bytes", p)
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x21 || p[i] > 0x7e || p[i] == '~' {
			return invalid("path must be printable ASCII without '~' or spaces")
		}
	}
	return nil
}

// joinPrefixes joins valid, masked client ranges with ','.
func joinPrefixes(ps []netip.Prefix) (string, error) {
	s := make([]string, len(ps))
	for i, p := range ps {
		if !p.IsValid() || p.Masked() != p {
			return "", invalid("client range %s is not a masked CIDR prefix", p)
		}
		s[i] = p.String()
	}
	return strings.Join(s, ","), nil
}
