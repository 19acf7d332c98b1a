package cdnsign

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Names of CloudFront's signed cookies.
const (
	CloudFrontPolicyCookie    = "CloudFront-Policy"
	CloudFrontExpiresCookie   = "CloudFront-Expires"
	CloudFrontSignatureCookie = "CloudFront-Signature"
	CloudFrontKeyPairIDCookie = "CloudFront-Key-Pair-Id"
	CloudFrontHashCookie      = "CloudFront-Hash-Algorithm"
)

// CloudFront signs requests for Amazon CloudFront with the private key of a
// public key in a trusted key group: RSA (PKCS#1 v1.5) or ECDSA P-256
// (ASN.1), over SHA-1 by default or SHA-256 (then the URL carries
// Hash-Algorithm=SHA256). Formats per the CloudFront Developer Guide: canned
// policy (Expires, Signature, Key-Pair-Id), custom policy (Policy, Signature,
// Key-Pair-Id) and the matching CloudFront-* cookies. Policies and
// signatures use CloudFront's base64 variant ('+'→'-', '='→'_', '/'→'~').
type CloudFront struct {
	keyPairID string
	key       crypto.Signer
	hash      crypto.Hash
	rand      io.Reader
}

// NewCloudFront returns a signer for the public key keyPairID. hash is
// crypto.SHA1 (CloudFront's default) or crypto.SHA256. rnd is the randomness
// for ECDSA (nil: crypto/rand); RSA signatures are deterministic.
func NewCloudFront(keyPairID string, key crypto.Signer, hash crypto.Hash, rnd io.Reader) (*CloudFront, error) {
	if err := checkName("CloudFront key pair ID", keyPairID); err != nil {
		return nil, err
	}
	switch k := key.Public().(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, invalid("CloudFront key %s: RSA keys must have at least 2048 bits", keyPairID)
		}
	case *ecdsa.PublicKey:
		if k.Curve.Params().Name != "P-256" {
			return nil, invalid("CloudFront key %s: ECDSA keys must be P-256 (prime256v1)", keyPairID)
		}
	default:
		return nil, invalid("CloudFront key %s: want an RSA or ECDSA P-256 key, not %T", keyPairID, k)
	}
	if hash != crypto.SHA1 && hash != crypto.SHA256 {
		return nil, invalid("CloudFront supports SHA-1 and SHA-256 only")
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	return &CloudFront{keyPairID: keyPairID, key: key, hash: hash, rand: rnd}, nil
}

// ParseCloudFrontKey reads a PEM private key: PKCS#1 RSA, SEC 1 EC or
// PKCS#8 (RSA or ECDSA), the forms `openssl genrsa`/`openssl ecparam`
// write. Encrypted PEM is refused.
func ParseCloudFrontKey(pemBytes []byte) (crypto.Signer, error) {
	b, rest := pem.Decode(pemBytes)
	if b == nil || len(bytes.TrimSpace(rest)) != 0 {
		return nil, invalid("CloudFront key must be exactly one PEM block")
	}
	var k any
	var err error
	switch b.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	default:
		return nil, invalid("CloudFront key: PEM block %q is not an unencrypted private key", b.Type)
	}
	if err != nil {
		return nil, invalid("CloudFront key: %v", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, invalid("CloudFront key: %T cannot sign", k)
	}
	return s, nil
}

// String names the key, never its value.
func (c CloudFront) String() string { return fmt.Sprintf("CloudFront(key %s)", c.keyPairID) }

// GoString names the key, never its value.
func (c CloudFront) GoString() string { return c.String() }

// Policy is a CloudFront custom policy with one statement.
type Policy struct {
	// Resource is the URL (or wildcard URL) the policy allows.
	Resource string
	// Starts is optional (DateGreaterThan).
	Starts time.Time
	// Expires is required (DateLessThan).
	Expires time.Time
	// ClientRange optionally restricts the client address (IpAddress).
	ClientRange netip.Prefix
}

type cfEpoch struct {
	T int64 `json:"AWS:EpochTime"`
}

type cfPolicy struct {
	Statement []cfStatement `json:"Statement"`
}

type cfStatement struct {
	Resource  string
	Condition cfCondition
}

type cfCondition struct {
	IPAddress *struct {
		SourceIP string `json:"AWS:SourceIp"`
	} `json:"IpAddress,omitempty"`
	DateGreaterThan *cfEpoch `json:",omitempty"`
	DateLessThan    *cfEpoch `json:",omitempty"`
}

// encode returns the policy JSON exactly as CloudFront's documentation and
// SDKs write it (no white space, fields in the documented order).
func (p Policy) encode() ([]byte, error) {
	if p.Resource == "" || len(p.Resource) > 8192 {
		return nil, invalid("policy resource must be 1 to 8192 bytes")
	}
	for i := 0; i < len(p.Resource); i++ {
		if p.Resource[i] < 0x21 || p.Resource[i] > 0x7e {
			return nil, invalid("policy resource must be printable ASCII without spaces")
		}
	}
	if err := checkExpiry(p.Starts, p.Expires); err != nil {
		return nil, err
	}
	c := cfCondition{DateLessThan: &cfEpoch{p.Expires.Unix()}}
	if !p.Starts.IsZero() {
		c.DateGreaterThan = &cfEpoch{p.Starts.Unix()}
	}
	if p.ClientRange.IsValid() {
		if p.ClientRange.Masked() != p.ClientRange {
			return nil, invalid("client range %s is not a masked CIDR prefix", p.ClientRange)
		}
		c.IPAddress = &struct {
			SourceIP string `json:"AWS:SourceIp"`
		}{p.ClientRange.String()}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(cfPolicy{Statement: []cfStatement{{Resource: p.Resource, Condition: c}}}); err != nil {
		return nil, fmt.Errorf("encode CloudFront policy: %w", err)
	}
	return bytes.TrimSpace(buf.Bytes()), nil
}

var cfEscaper = strings.NewReplacer("+", "-", "=", "_", "/", "~")

func cfBase64(b []byte) string { return cfEscaper.Replace(base64.StdEncoding.EncodeToString(b)) }

func (c *CloudFront) sign(policy []byte) (string, error) {
	var sum []byte
	if c.hash == crypto.SHA256 {
		s := sha256.Sum256(policy)
		sum = s[:]
	} else {
		s := sha1.Sum(policy)
		sum = s[:]
	}
	sig, err := c.key.Sign(c.rand, sum, c.hash)
	if err != nil {
		return "", fmt.Errorf("sign CloudFront policy with key %s: %w", c.keyPairID, err)
	}
	return cfBase64(sig), nil
}

var cloudFrontReserved = []string{"Expires", "Policy", "Signature", "Key-Pair-Id", "Hash-Algorithm"}

func (c *CloudFront) hashParam() string {
	if c.hash == crypto.SHA256 {
		return "&Hash-Algorithm=SHA256"
	}
	return ""
}

// SignURL returns rawURL signed with a canned policy until expires.
func (c *CloudFront) SignURL(rawURL string, expires time.Time) (string, error) {
	if _, err := checkURL(rawURL, cloudFrontReserved...); err != nil {
		return "", err
	}
	pol, err := Policy{Resource: rawURL, Expires: expires}.encode()
	if err != nil {
		return "", err
	}
	sig, err := c.sign(pol)
	if err != nil {
		return "", err
	}
	return rawURL + sep(rawURL) + "Expires=" + strconv.FormatInt(expires.Unix(), 10) + "&Signature=" + sig + "&Key-Pair-Id=" + c.keyPairID + c.hashParam(), nil
}

// SignURLPolicy returns rawURL signed with the custom policy p (p.Resource
// may be a wildcard that matches rawURL; CloudFront checks the match).
func (c *CloudFront) SignURLPolicy(rawURL string, p Policy) (string, error) {
	if _, err := checkURL(rawURL, cloudFrontReserved...); err != nil {
		return "", err
	}
	pol, err := p.encode()
	if err != nil {
		return "", err
	}
	sig, err := c.sign(pol)
	if err != nil {
		return "", err
	}
	return rawURL + sep(rawURL) + "Policy=" + cfBase64(pol) + "&Signature=" + sig + "&Key-Pair-Id=" + c.keyPairID + c.hashParam(), nil
}

// Cookies returns CloudFront's signed cookies for p: with a canned policy
// (only Resource and Expires set) CloudFront-Expires, otherwise
// CloudFront-Policy; then CloudFront-Signature and CloudFront-Key-Pair-Id,
// and for SHA-256 the optional fourth cookie CloudFront-Hash-Algorithm
// ("Set signed cookies using a canned policy", CloudFront Developer Guide).
func (c *CloudFront) Cookies(p Policy, canned bool) ([]*http.Cookie, error) {
	if canned && (!p.Starts.IsZero() || p.ClientRange.IsValid()) {
		return nil, invalid("a canned policy has only a resource and an expiry")
	}
	pol, err := p.encode()
	if err != nil {
		return nil, err
	}
	sig, err := c.sign(pol)
	if err != nil {
		return nil, err
	}
	first := &http.Cookie{Name: CloudFrontPolicyCookie, Value: cfBase64(pol)}
	if canned {
		first = &http.Cookie{Name: CloudFrontExpiresCookie, Value: strconv.FormatInt(p.Expires.Unix(), 10)}
	}
	cs := []*http.Cookie{first, {Name: CloudFrontSignatureCookie, Value: sig}, {Name: CloudFrontKeyPairIDCookie, Value: c.keyPairID}}
	if c.hash == crypto.SHA256 {
		cs = append(cs, &http.Cookie{Name: CloudFrontHashCookie, Value: "SHA256"})
	}
	for _, k := range cs {
		k.Expires, k.Secure, k.HttpOnly, k.SameSite = p.Expires.UTC(), true, true, http.SameSiteStrictMode
	}
	return cs, nil
}
