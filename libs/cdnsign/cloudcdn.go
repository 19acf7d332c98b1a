package cdnsign

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// CloudCDNCookie is the name of Cloud CDN's signed cookie.
const CloudCDNCookie = "Cloud-CDN-Cookie"

// CloudCDN signs requests for Google Cloud CDN with a signed request key
// (HMAC-SHA1 over a 128-bit key). The format is Google's "Using signed URLs"
// and "Using signed cookies" pages: Expires, KeyName and Signature query
// parameters, URLPrefix for prefix signatures, and the Cloud-CDN-Cookie
// cookie. Signatures are base64url with padding, as Google's samples emit.
type CloudCDN struct {
	keyName string
	key     []byte
}

// NewCloudCDN returns a signer for the key keyName whose value is key (the
// 16 bytes Cloud CDN generates). A key of another length is refused.
func NewCloudCDN(keyName string, key []byte) (*CloudCDN, error) {
	if err := checkName("Cloud CDN key name", keyName); err != nil {
		return nil, err
	}
	if len(key) != 16 {
		return nil, invalid("Cloud CDN key %q is %d bytes, want 16 (a 128-bit signed request key)", keyName, len(key))
	}
	return &CloudCDN{keyName: keyName, key: append([]byte(nil), key...)}, nil
}

// ParseCloudCDNKey decodes the key file format of `gcloud compute
// backend-services add-signed-url-key --key-file`: the key in base64url
// (padding optional), surrounding white space ignored.
func ParseCloudCDNKey(text []byte) ([]byte, error) {
	s := strings.TrimRight(strings.TrimSpace(string(text)), "=")
	k, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, invalid("Cloud CDN key is not base64url: regenerate it with `head -c 16 /dev/urandom | base64 | tr +/ -_`")
	}
	return k, nil
}

// String names the key, never its value.
func (c CloudCDN) String() string { return fmt.Sprintf("CloudCDN(key %s)", c.keyName) }

// GoString names the key, never its value.
func (c CloudCDN) GoString() string { return c.String() }

func (c *CloudCDN) sign(s string) string {
	m := hmac.New(sha1.New, c.key)
	m.Write([]byte(s))
	return base64.URLEncoding.EncodeToString(m.Sum(nil))
}

var cloudCDNReserved = []string{"Expires", "KeyName", "Signature", "URLPrefix"}

// SignURL returns rawURL signed until expires: the signature covers the
// whole URL, so any other path or query is refused by the CDN.
func (c *CloudCDN) SignURL(rawURL string, expires time.Time) (string, error) {
	if _, err := checkURL(rawURL, cloudCDNReserved...); err != nil {
		return "", err
	}
	if err := checkExpiry(time.Time{}, expires); err != nil {
		return "", err
	}
	s := rawURL + sep(rawURL) + "Expires=" + strconv.FormatInt(expires.Unix(), 10) + "&KeyName=" + c.keyName
	return s + "&Signature=" + c.sign(s), nil
}

// prefixPolicy returns the signed policy for prefix, joined by delim ("&"
// for URLs, ":" for cookies), without the signature.
func (c *CloudCDN) prefixPolicy(prefix string, expires time.Time, delim string) (string, error) {
	if _, err := checkURL(prefix, cloudCDNReserved...); err != nil {
		return "", fmt.Errorf("URL prefix: %w", err)
	}
	if err := checkExpiry(time.Time{}, expires); err != nil {
		return "", err
	}
	return "URLPrefix=" + base64.URLEncoding.EncodeToString([]byte(prefix)) + delim +
		"Expires=" + strconv.FormatInt(expires.Unix(), 10) + delim + "KeyName=" + c.keyName, nil
}

// SignURLPrefix returns rawURL with a signature for every URL that starts
// with prefix. rawURL must itself start with prefix.
func (c *CloudCDN) SignURLPrefix(rawURL, prefix string, expires time.Time) (string, error) {
	if _, err := checkURL(rawURL, cloudCDNReserved...); err != nil {
		return "", err
	}
	if !strings.HasPrefix(rawURL, prefix) {
		return "", invalid("URL does not start with the prefix it is signed for")
	}
	p, err := c.prefixPolicy(prefix, expires, "&")
	if err != nil {
		return "", err
	}
	return rawURL + sep(rawURL) + p + "&Signature=" + c.sign(p), nil
}

// SignCookie returns the Cloud-CDN-Cookie for every URL that starts with
// prefix, marked Secure and HttpOnly and expiring with the signature.
func (c *CloudCDN) SignCookie(prefix string, expires time.Time) (*http.Cookie, error) {
	p, err := c.prefixPolicy(prefix, expires, ":")
	if err != nil {
		return nil, err
	}
	return &http.Cookie{
		Name: CloudCDNCookie, Value: p + ":Signature=" + c.sign(p),
		Expires: expires.UTC(), Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	}, nil
}
