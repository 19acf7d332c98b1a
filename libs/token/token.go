// Package token is the format of edge download tokens: claims bound to one
// artifact digest and an expiry, signed with Ed25519 by the cdn-broker and
// verified by edges, which hold only public keys.
package token

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/strictjson"
)

// MaxSize bounds the tokens Verify reads.
const MaxSize = 4 << 10

const (
	prefix = "v1."
	domain = "custody-edge-token-v1\n"
)

// Errors returned by Verify, wrapped with details.
var (
	ErrMalformed  = errors.New("malformed token")
	ErrUnknownKey = errors.New("token signed by an unknown key")
	ErrSignature  = errors.New("token signature does not verify")
	ErrExpired    = errors.New("token expired")
	ErrDigest     = errors.New("token is for another digest")
	// ErrIssuedAt means the token claims to be issued further in the future
	// than the allowed clock skew: a broker clock that far off, or a forged
	// issue time meant to outlive a stop epoch.
	ErrIssuedAt = errors.New("token issued in the future")
	// ErrLifetime means the token lives longer than the verifier allows.
	ErrLifetime = errors.New("token lifetime too long")
	// ErrClientIP means the token is bound to a client address range the
	// requesting client is not in.
	ErrClientIP = errors.New("token is for another client address")
)

// UnknownKeyError is the error of a token signed by a key not among those
// given to Verify: errors.Is(err, ErrUnknownKey) holds. KeyID is the id the
// token names, untrusted and at most MaxSize bytes: look it up, quote it
// (quote.Prefix) before showing it.
type UnknownKeyError struct {
	KeyID string
}

func (e *UnknownKeyError) Error() string {
	return fmt.Sprintf("%v: %q", ErrUnknownKey, quote.Prefix(e.KeyID))
}

// Unwrap returns ErrUnknownKey.
func (e *UnknownKeyError) Unwrap() error { return ErrUnknownKey }

// Limits bound the tokens a verifier accepts beyond their signature.
type Limits struct {
	// MaxSkew is how far in the future an issue time may be.
	MaxSkew time.Duration
	// MaxLifetime is the longest expiry minus issue time accepted.
	MaxLifetime time.Duration
}

// DefaultLimits match the broker's longest token TTL (1h) and allow a
// minute of clock skew.
var DefaultLimits = Limits{MaxSkew: time.Minute, MaxLifetime: time.Hour}

// Claims are what a token grants.
type Claims struct {
	KeyID      string
	Digest     string
	DecisionID string
	// Environment is the environment of the decision the token was issued
	// for; edges compare the issue time with that environment's pause epoch.
	Environment string
	// DecidedAt is when the allow decision behind the token was made, to
	// the millisecond; edges refuse tokens whose decision predates a stop
	// epoch. Zero if unknown. Milliseconds, not seconds: a decision taken
	// just after a revocation, in the same second, is after it, and whole
	// seconds could only refuse it (rounding must never let an earlier one
	// through).
	DecidedAt time.Time
	Expires   time.Time
	IssuedAt  time.Time
	// ClientRange, if valid, is the client address range the token is
	// bound to (canonical: masked). Edges serve only clients in it.
	ClientRange netip.Prefix
}

// CheckClient fails with ErrClientIP unless the token is unbound or addr
// is in its range. IPv4-mapped IPv6 addresses count as IPv4.
func (c *Claims) CheckClient(addr netip.Addr) error {
	if !c.ClientRange.IsValid() {
		return nil
	}
	if !addr.IsValid() || !c.ClientRange.Contains(addr.Unmap()) {
		return fmt.Errorf("%w: bound to %s", ErrClientIP, c.ClientRange)
	}
	return nil
}

type claimsJSON struct {
	KeyID      string `json:"kid"`
	Digest     string `json:"digest"`
	Expires    int64  `json:"exp"`
	IssuedAt   int64  `json:"iat"`
	DecisionID string `json:"decision_id"`
	Env        string `json:"env,omitempty"`
	DecidedAt  int64  `json:"dat_ms,omitempty"` // Unix milliseconds
	ClientIP   string `json:"cip,omitempty"`    // CIDR, canonical
}

// KeyID is the hex SHA-256 of the key's PKIX DER encoding.
func KeyID(pub ed25519.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err) // an ed25519.PublicKey always marshals
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// Mint signs c with key. c.KeyID is set from the key.
func Mint(key ed25519.PrivateKey, c Claims) (string, error) {
	if c.Digest == "" || c.Expires.IsZero() {
		return "", errors.New("mint token: digest and expiry are required")
	}
	cip := ""
	if c.ClientRange.IsValid() {
		if c.ClientRange != c.ClientRange.Masked() {
			return "", fmt.Errorf("mint token: client range %s is not canonical (%s)", c.ClientRange, c.ClientRange.Masked())
		}
		cip = c.ClientRange.String()
	}
	body, err := json.Marshal(claimsJSON{
		KeyID: KeyID(key.Public().(ed25519.PublicKey)), Digest: c.Digest,
		Expires: c.Expires.Unix(), IssuedAt: c.IssuedAt.Unix(), DecisionID: c.DecisionID, Env: c.Environment,
		DecidedAt: unixMilliOrZero(c.DecidedAt), ClientIP: cip,
	})
	if err != nil {
		return "", err
	}
	sig := ed25519.Sign(key, append([]byte(domain), body...))
	enc := base64.RawURLEncoding
	return prefix + enc.EncodeToString(body) + "." + enc.EncodeToString(sig), nil
}

// Verify is VerifyLimits with DefaultLimits.
func Verify(tok string, keys map[string]ed25519.PublicKey, digest string, now time.Time) (*Claims, error) {
	return VerifyLimits(tok, keys, digest, now, DefaultLimits)
}

// VerifyLimits checks tok's signature with the key named in it, that it has
// not expired at now, that it grants digest, that its issue time is at most
// lim.MaxSkew after now and that it lives at most lim.MaxLifetime. It
// returns the claims. Stop epochs are the caller's to compare with
// Claims.IssuedAt.
func VerifyLimits(tok string, keys map[string]ed25519.PublicKey, digest string, now time.Time, lim Limits) (*Claims, error) {
	if len(tok) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(tok), MaxSize)
	}
	rest, ok := strings.CutPrefix(tok, prefix)
	body64, sig64, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 {
		return nil, fmt.Errorf("%w: want v1.<claims>.<signature>", ErrMalformed)
	}
	enc := base64.RawURLEncoding.Strict()
	body, err := enc.DecodeString(body64)
	if err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	sig, err := enc.DecodeString(sig64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature", ErrMalformed)
	}
	// Canonical encodings only: re-encoding must give the same text, so no
	// two strings are the same token.
	if base64.RawURLEncoding.EncodeToString(body) != body64 || base64.RawURLEncoding.EncodeToString(sig) != sig64 {
		return nil, fmt.Errorf("%w: non-canonical base64", ErrMalformed)
	}
	var cj claimsJSON
	if err := strictjson.Decode(body, MaxSize, &cj); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	key, ok := keys[cj.KeyID]
	if !ok {
		return nil, &UnknownKeyError{KeyID: cj.KeyID}
	}
	if !ed25519.Verify(key, append([]byte(domain), body...), sig) {
		return nil, ErrSignature
	}
	c := &Claims{KeyID: cj.KeyID, Digest: cj.Digest, DecisionID: cj.DecisionID, Environment: cj.Env,
		Expires: time.Unix(cj.Expires, 0), IssuedAt: time.Unix(cj.IssuedAt, 0)}
	if cj.DecidedAt != 0 {
		c.DecidedAt = time.UnixMilli(cj.DecidedAt)
	}
	if cj.DecidedAt < 0 {
		return nil, fmt.Errorf("%w: decision time %d before 1970", ErrMalformed, cj.DecidedAt)
	}
	if cj.ClientIP != "" {
		p, err := ParseClientRange(cj.ClientIP)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		c.ClientRange = p
	}
	if !now.Before(c.Expires) {
		return nil, fmt.Errorf("%w at %s", ErrExpired, c.Expires.UTC().Format(time.RFC3339))
	}
	if c.IssuedAt.Sub(now) > lim.MaxSkew {
		return nil, fmt.Errorf("%w: issued at %s, more than %s ahead", ErrIssuedAt, c.IssuedAt.UTC().Format(time.RFC3339), lim.MaxSkew)
	}
	// Compared as seconds, so that an expiry near the int64 limit cannot
	// overflow a Duration into a short lifetime.
	if cj.IssuedAt <= 0 || cj.Expires-cj.IssuedAt > int64(lim.MaxLifetime/time.Second) {
		return nil, fmt.Errorf("%w: %ds from issue to expiry, limit %s", ErrLifetime, cj.Expires-cj.IssuedAt, lim.MaxLifetime)
	}
	if c.Digest != digest {
		return nil, fmt.Errorf("%w: it grants %q", ErrDigest, quote.Prefix(c.Digest))
	}
	return c, nil
}

// ParseClientRange parses a client address range in canonical CIDR form
// (masked, no zone, IPv4 not mapped into IPv6): one text per range.
func ParseClientRange(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("client range %q: want a CIDR such as 203.0.113.0/24 or 2001:db8::/48", quote.Prefix(s))
	}
	if p != p.Masked() || p.String() != s || p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("client range %q is not in canonical form: want %s", quote.Prefix(s), p.Masked())
	}
	return p, nil
}

func unixMilliOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// LoadPrivateKey reads an Ed25519 PKCS#8 PEM private key.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	der, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("token key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("token key %s is %T, want Ed25519", path, k)
	}
	return priv, nil
}

// LoadPublicKey reads an Ed25519 PKIX PEM public key.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	der, err := readPEM(path, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("token public key %s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("token public key %s is %T, want Ed25519", path, k)
	}
	return pub, nil
}

func readPEM(path, typ string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != typ {
		return nil, fmt.Errorf("%s: want a PEM %s", path, typ)
	}
	return blk.Bytes, nil
}
