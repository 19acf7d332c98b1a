package cdnsign

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// AkamaiTokenName is EdgeAuth's default token name (query parameter,
// cookie or header).
const AkamaiTokenName = "__token__"

// Akamai mints Akamai EdgeAuth 2.0 tokens (Token Authentication 2.0,
// HMAC-SHA256 over a hex key), in the field order of Akamai's reference
// implementations (EdgeAuth-Token-Python/-Node/-Java):
// ip, st, exp, acl, id, data, [url, salt,] hmac, joined by '~'; several ACL
// entries are joined by '!'. Escape-early is not offered: Custody's paths
// are plain ASCII and need no escaping.
//
// Rotation: the Akamai property holds a key and a transition key and accepts
// tokens under either; the broker mints with one of them (see the broker's
// key selection), so Akamai needs nothing more from this type.
type Akamai struct {
	name string
	key  []byte
}

// NewAkamai returns a minter for the key named name (for logs only), given
// as the hex string Akamai's property configuration shows.
func NewAkamai(name, hexKey string) (*Akamai, error) {
	if err := checkName("Akamai key name", name); err != nil {
		return nil, err
	}
	k, err := hex.DecodeString(strings.TrimSpace(hexKey))
	if err != nil || len(k) < 16 {
		return nil, invalid("Akamai key %q must be hex with at least 16 bytes (the property's Token Authentication key)", name)
	}
	return &Akamai{name: name, key: k}, nil
}

// String names the key, never its value.
func (a Akamai) String() string { return fmt.Sprintf("Akamai(key %s)", a.name) }

// GoString names the key, never its value.
func (a Akamai) GoString() string { return a.String() }

// EdgeAuth is what an Akamai token grants. Exactly one of ACL and URL is set.
type EdgeAuth struct {
	// ACL lists path patterns ('*' wildcards) the token is valid for.
	ACL []string
	// URL is the one path the token is valid for; it is signed but not
	// repeated in the token.
	URL string
	// Start is optional ("st"); Akamai refuses the token before it.
	Start time.Time
	// End is the expiry ("exp"). If zero, Start plus Window.
	End time.Time
	// Window is the lifetime when End is zero; it then needs Start.
	Window time.Duration
	// IP optionally binds the token to one client address.
	IP netip.Addr
	// SessionID and Data are optional opaque fields ("id", "data").
	SessionID, Data string
	// Salt is optional, signed but not sent.
	Salt string
}

// Token returns the token value (without "__token__=").
func (a *Akamai) Token(e EdgeAuth) (string, error) {
	if (len(e.ACL) == 0) == (e.URL == "") {
		return "", invalid("an Akamai token needs exactly one of ACL and URL")
	}
	end := e.End
	if end.IsZero() {
		if e.Window <= 0 || e.Start.IsZero() {
			return "", invalid("an Akamai token needs an end time, or a start time and a positive window")
		}
		end = e.Start.Add(e.Window)
	}
	if err := checkExpiry(e.Start, end); err != nil {
		return "", err
	}
	var f []string
	if e.IP.IsValid() {
		f = append(f, "ip="+e.IP.String())
	}
	if !e.Start.IsZero() {
		f = append(f, "st="+strconv.FormatInt(e.Start.Unix(), 10))
	}
	f = append(f, "exp="+strconv.FormatInt(end.Unix(), 10))
	for _, p := range append(append([]string(nil), e.ACL...), e.URL) {
		if p != "" && !akamaiSafe(p, "!") {
			return "", invalid("Akamai path %q: want printable ASCII without '~', '!' or spaces", p)
		}
	}
	if len(e.ACL) > 0 {
		f = append(f, "acl="+strings.Join(e.ACL, "!"))
	}
	for _, v := range []string{e.SessionID, e.Data, e.Salt} {
		if v != "" && !akamaiSafe(v, "") {
			return "", invalid("Akamai session ID, data and salt must be printable ASCII without '~' or spaces")
		}
	}
	if e.SessionID != "" {
		f = append(f, "id="+e.SessionID)
	}
	if e.Data != "" {
		f = append(f, "data="+e.Data)
	}
	signed := append([]string(nil), f...)
	if e.URL != "" {
		signed = append(signed, "url="+e.URL)
	}
	if e.Salt != "" {
		signed = append(signed, "salt="+e.Salt)
	}
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(strings.Join(signed, "~")))
	return strings.Join(append(f, "hmac="+hex.EncodeToString(m.Sum(nil))), "~"), nil
}

func akamaiSafe(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e || s[i] == '~' || strings.IndexByte(extra, s[i]) >= 0 {
			return false
		}
	}
	return len(s) <= 2048
}
