// Package cdnsign mints time-limited request signatures in the formats of
// commercial CDNs (Google Cloud CDN and Media CDN, Amazon CloudFront, Akamai
// EdgeAuth 2.0) so that a CDN can refuse downloads Custody did not grant.
//
// Each vendor has one file and one signer type. A signer holds key material
// and never prints it: its String and GoString methods name the key only.
// Signers are immutable and safe for concurrent use. Minting is pure: the
// caller passes the expiry (and start time where the format has one), so the
// clock stays with the caller. None of these formats protects integrity;
// consumers verify the digest of what they download.
package cdnsign

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// ErrInvalid is wrapped by every error caused by the caller's input (a URL,
// a time range, a key): fix the input or the configuration, retrying will not
// help.
var ErrInvalid = errors.New("cdnsign: invalid input")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// checkURL accepts an absolute http(s) URL without a fragment, with only
// ASCII and without any of the reserved query parameters, the restrictions
// every vendor places on a URL to sign.
func checkURL(raw string, reserved ...string) (*url.URL, error) {
	if raw == "" || len(raw) > 8192 {
		return nil, invalid("URL must be 1 to 8192 bytes")
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] < 0x21 || raw[i] > 0x7e {
			return nil, invalid("URL must be printable ASCII without spaces (percent-encode the rest)")
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, invalid("URL: %v", err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, invalid("URL must be absolute http(s)://host/...")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, invalid("URL must not have a fragment")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, invalid("URL query: %v", err)
	}
	for _, r := range reserved {
		if q.Has(r) {
			return nil, invalid("URL already has the %s query parameter", r)
		}
	}
	return u, nil
}

// sep returns the separator that appends a parameter to raw.
func sep(raw string) string {
	if strings.Contains(raw, "?") {
		return "&"
	}
	return "?"
}

// checkExpiry refuses expiries before the Unix epoch and starts at or after
// the expiry.
func checkExpiry(start, expires time.Time) error {
	if expires.Unix() <= 0 {
		return invalid("expiry %s is not after 1970", expires.UTC().Format(time.RFC3339))
	}
	if !start.IsZero() && !start.Before(expires) {
		return invalid("start %s is not before expiry %s", start.UTC().Format(time.RFC3339), expires.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkName accepts key names the vendors allow: letters, digits, '-' and
// '_' (Cloud CDN's rule, which also keeps names free of every delimiter the
// formats use).
func checkName(what, n string) error {
	if n == "" || len(n) > 128 {
		return invalid("%s must be 1 to 128 characters", what)
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return invalid("%s %q: use letters, digits, '-' and '_'", what, n)
		}
	}
	return nil
}
