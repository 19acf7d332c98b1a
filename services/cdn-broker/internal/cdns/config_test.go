package cdns

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	hexDigest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	ttl       = 5 * time.Minute
)

var now = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

// keyFiles writes one key of every kind and returns their paths and raw
// key material (to check that nothing leaks).
type keyFiles struct {
	dir                                  string
	cloudCDN, mediaCDN, cloudFront, akam string
	cloudCDNKey                          []byte
	mediaSeed                            []byte
	akamaiKey                            []byte
}

func writeKeys(t *testing.T) keyFiles {
	t.Helper()
	dir := t.TempDir()
	k := keyFiles{dir: dir, cloudCDNKey: make([]byte, 16), mediaSeed: make([]byte, 32), akamaiKey: make([]byte, 32)}
	for _, b := range [][]byte{k.cloudCDNKey, k.mediaSeed, k.akamaiKey} {
		rand.Read(b)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	k.cloudCDN = write("gcdn.key", []byte(base64.URLEncoding.EncodeToString(k.cloudCDNKey)+"\n"))
	k.mediaCDN = write("media.key", []byte(base64.URLEncoding.EncodeToString(k.mediaSeed)))
	k.cloudFront = write("cf.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	k.akam = write("akamai.key", []byte(hex.EncodeToString(k.akamaiKey)+"\n"))
	return k
}

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "cdns.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func allKinds(k keyFiles) string {
	return fmt.Sprintf(`{"cdns": [
  {"name": "gcdn", "kind": "cloud-cdn", "base_url": "https://gcdn.example.com", "key": {"name": "gkey", "file": %q}, "cookies": true},
  {"name": "gcdnp", "kind": "cloud-cdn", "base_url": "https://gcdnp.example.com/custody", "signature": "url-prefix", "key": {"name": "gkey", "file": %q}, "cookies": true},
  {"name": "media", "kind": "media-cdn", "base_url": "https://media.example.com/custody", "key": {"name": "mkey", "file": %q}},
  {"name": "cf", "kind": "cloudfront", "base_url": "https://d111.cloudfront.net", "key": {"name": "K2JCJMDEHXQW5F", "file": %q}, "cookies": true},
  {"name": "cf256", "kind": "cloudfront", "base_url": "https://d222.cloudfront.net", "hash": "sha256", "key": {"name": "K3", "file": %q}, "cookies": true},
  {"name": "akamai", "kind": "akamai", "base_url": "https://dl.akamaized.example", "key": {"name": "ak-2026", "file": %q}}
]}`, k.cloudCDN, k.cloudCDN, k.mediaCDN, k.cloudFront, k.cloudFront, k.akam)
}

func TestLoadAndMintEveryKind(t *testing.T) {
	k := writeKeys(t)
	cs, err := Load(t.Context(), writeConfig(t, k.dir, allKinds(k)), ttl, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 6 {
		t.Fatalf("%d CDNs, want 6", len(cs))
	}
	exp := now.Add(ttl)
	path := "/v1/blobs/sha256/" + hexDigest
	for _, c := range cs {
		s, err := c.Mint(hexDigest, now, exp)
		if err != nil {
			t.Fatalf("%s: %v", c.Name(), err)
		}
		u, err := url.Parse(s.URL)
		if err != nil {
			t.Fatalf("%s: %v", c.Name(), err)
		}
		wantPath := path
		if c.Name() == "media" || c.Name() == "gcdnp" {
			wantPath = "/custody" + path
		}
		if u.Path != wantPath || u.Scheme != "https" {
			t.Errorf("%s: URL %s, want path %s", c.Name(), s.URL, wantPath)
		}
		q := u.Query()
		e := strconv.FormatInt(exp.Unix(), 10)
		switch c.Name() {
		case "gcdn":
			// Recompute Cloud CDN's HMAC-SHA1: the URL is bound to the path and expiry.
			signed := strings.SplitN(s.URL, "&Signature=", 2)[0]
			m := hmac.New(sha1.New, k.cloudCDNKey)
			m.Write([]byte(signed))
			if q.Get("Expires") != e || q.Get("KeyName") != "gkey" || q.Get("Signature") != base64.URLEncoding.EncodeToString(m.Sum(nil)) {
				t.Errorf("gcdn URL %s does not verify", s.URL)
			}
			if len(s.Cookies) != 1 || s.Cookies[0].Name != "Cloud-CDN-Cookie" || s.Cookies[0].Path != path || s.Cookies[0].Domain != "gcdn.example.com" {
				t.Errorf("gcdn cookies = %v", s.Cookies)
			}
		case "gcdnp":
			// Google's URL-prefix signature: the HMAC-SHA1 covers
			// URLPrefix=<base64url(prefix)>&Expires=<exp>&KeyName=<name>,
			// appended to the URL, and the prefix is the digest's own URL.
			digestURL := "https://gcdnp.example.com" + wantPath
			prefix, err := base64.URLEncoding.DecodeString(q.Get("URLPrefix"))
			if err != nil || string(prefix) != digestURL {
				t.Errorf("gcdnp URLPrefix %q (%v) decodes to %q, want %q", q.Get("URLPrefix"), err, prefix, digestURL)
			}
			policy := "URLPrefix=" + base64.URLEncoding.EncodeToString([]byte(digestURL)) + "&Expires=" + e + "&KeyName=gkey"
			m := hmac.New(sha1.New, k.cloudCDNKey)
			m.Write([]byte(policy))
			if want := digestURL + "?" + policy + "&Signature=" + base64.URLEncoding.EncodeToString(m.Sum(nil)); s.URL != want {
				t.Errorf("gcdnp URL\n%s\nwant\n%s", s.URL, want)
			}
			if len(s.Cookies) != 1 || s.Cookies[0].Name != "Cloud-CDN-Cookie" || s.Cookies[0].Path != wantPath || s.Cookies[0].Domain != "gcdnp.example.com" ||
				!strings.HasPrefix(s.Cookies[0].Value, "URLPrefix="+q.Get("URLPrefix")+":") {
				t.Errorf("gcdnp cookies = %v", s.Cookies)
			}
			// Another digest: another prefix and another signature.
			other := strings.Repeat("0", 64)
			o, err := c.Mint(other, now, exp)
			if err != nil {
				t.Fatal(err)
			}
			ou, _ := url.Parse(o.URL)
			op, _ := base64.URLEncoding.DecodeString(ou.Query().Get("URLPrefix"))
			if string(op) != "https://gcdnp.example.com/custody/v1/blobs/sha256/"+other || ou.Query().Get("Signature") == q.Get("Signature") {
				t.Errorf("gcdnp: another digest gets prefix %q and signature %s, this one %s", op, ou.Query().Get("Signature"), q.Get("Signature"))
			}
		case "media":
			tok := q.Get("edge-cache-token")
			fields := strings.Split(tok, "~")
			if len(fields) != 3 || fields[0] != "FullPath" || fields[1] != "Expires="+e {
				t.Fatalf("media token %q", tok)
			}
			sig, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(fields[2], "Signature="))
			pub := ed25519.NewKeyFromSeed(k.mediaSeed).Public().(ed25519.PublicKey)
			if !ed25519.Verify(pub, []byte("FullPath="+wantPath+"~Expires="+e), sig) {
				t.Errorf("media token does not verify for %s", wantPath)
			}
		case "cf", "cf256":
			if q.Get("Expires") != e || q.Get("Signature") == "" || (q.Get("Hash-Algorithm") == "SHA256") != (c.Name() == "cf256") {
				t.Errorf("%s URL %s", c.Name(), s.URL)
			}
			if n := map[string]int{"cf": 3, "cf256": 4}[c.Name()]; len(s.Cookies) != n || s.Cookies[0].Name != "CloudFront-Expires" || s.Cookies[0].Value != e {
				t.Errorf("%s cookies = %v, want %d", c.Name(), s.Cookies, n)
			}
		case "akamai":
			tok := q.Get("__token__")
			want := fmt.Sprintf("st=%d~exp=%s~acl=%s", now.Unix(), e, path)
			m := hmac.New(sha256.New, k.akamaiKey)
			m.Write([]byte(want))
			if tok != want+"~hmac="+hex.EncodeToString(m.Sum(nil)) {
				t.Errorf("akamai token %q does not verify", tok)
			}
		}
		// Another digest gets another signature.
		o, _ := c.Mint(strings.Repeat("0", 64), now, exp)
		if o.URL == s.URL || strings.Contains(o.URL, hexDigest) {
			t.Errorf("%s: URL not bound to the digest", c.Name())
		}
		for _, leak := range []string{hex.EncodeToString(k.cloudCDNKey), hex.EncodeToString(k.akamaiKey), base64.URLEncoding.EncodeToString(k.mediaSeed)} {
			if strings.Contains(s.URL+fmt.Sprint(c)+fmt.Sprintf("%+v", c), leak) {
				t.Errorf("%s leaks key material", c.Name())
			}
		}
	}
}

func TestRotation(t *testing.T) {
	k := writeKeys(t)
	old := filepath.Join(k.dir, "gcdn-old.key")
	os.WriteFile(old, []byte(base64.URLEncoding.EncodeToString(make([]byte, 16))), 0o600)
	switchAt := now.Add(time.Hour)
	cfg := fmt.Sprintf(`{"cdns": [{"name": "gcdn", "kind": "cloud-cdn", "base_url": "https://g.example",
	  "key": {"name": "new", "file": %q, "not_before": %q},
	  "previous_key": {"name": "old", "file": %q, "until": %q}}]}`,
		k.cloudCDN, switchAt.Format(time.RFC3339), old, switchAt.Add(ttl).Format(time.RFC3339))
	cs, err := Load(t.Context(), writeConfig(t, k.dir, cfg), ttl, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at   time.Time
		want string
	}{{now, "old"}, {switchAt.Add(-time.Second), "old"}, {switchAt, "new"}, {switchAt.Add(24 * time.Hour), "new"}} {
		s, err := cs[0].Mint(hexDigest, tc.at, tc.at.Add(ttl))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(s.URL, "KeyName="+tc.want+"&") {
			t.Errorf("at %s: %s, want key %s", tc.at, s.URL, tc.want)
		}
	}
	// Long after the switch the new key still signs.
	if _, err := cs[0].Mint(hexDigest, switchAt.Add(ttl), switchAt.Add(2*ttl)); err != nil {
		t.Errorf("after the switch: %v", err)
	}
	c := &CDN{name: "x", cur: keyed{name: "new", notBefore: switchAt}, prev: &keyed{name: "old", until: now}}
	if _, err := c.Mint(hexDigest, now, now.Add(ttl)); !errors.Is(err, ErrNoKey) {
		t.Errorf("no key valid: err = %v, want ErrNoKey", err)
	}
}

// kindPurge is a one-CDN configuration of kind with the purge section
// purge (the fields inside the braces).
func kindPurge(kind, purge string) string {
	return `{"cdns": [{"name": "a", "kind": "` + kind + `", "base_url": "https://a.example", "key": {"name": "k", "file": "/k"}, "purge": {` + purge + `}}]}`
}

func TestParseRefusesBadConfig(t *testing.T) {
	key := `{"name": "k", "file": "/k"}`
	one := func(fields string) string {
		return `{"cdns": [{"name": "a", "kind": "cloud-cdn", "base_url": "https://a.example", "key": ` + key + fields + `}]}`
	}
	nb, until := now.Add(time.Hour).Format(time.RFC3339), now.Add(time.Hour+time.Minute).Format(time.RFC3339)
	cases := map[string]struct{ cfg, want string }{
		"not JSON":          {`{`, "invalid JSON"},
		"trailing data":     {`{"cdns": []} {}`, "invalid JSON"},
		"unknown key":       {`{"cdns": [], "extra": 1}`, "invalid JSON"},
		"key value inline":  {`{"cdns": [{"name": "a", "kind": "cloud-cdn", "base_url": "https://a.example", "key": {"name": "k", "value": "c2VjcmV0"}}]}`, "invalid JSON"},
		"duplicate field":   {`{"cdns": [{"name": "a", "name": "b"}]}`, "invalid JSON"},
		"bad kind":          {strings.Replace(one(""), "cloud-cdn", "fastly", 1), "kind"},
		"http base":         {strings.Replace(one(""), "https://a.example", "http://a.example", 1), "base_url"},
		"base with query":   {strings.Replace(one(""), "https://a.example", "https://a.example/?x=1", 1), "base_url"},
		"base with user":    {strings.Replace(one(""), "https://a.example", "https://u:p@a.example", 1), "base_url"},
		"bad name":          {strings.Replace(one(""), `"name": "a"`, `"name": "A B"`, 1), "name"},
		"no key ref":        {strings.Replace(one(""), key, `{"name": "k"}`, 1), "exactly one of file and vault"},
		"both key refs":     {strings.Replace(one(""), key, `{"name": "k", "file": "/k", "vault": {"path": "secret/data/a", "field": "k"}}`, 1), "exactly one of file and vault"},
		"no key name":       {strings.Replace(one(""), key, `{"file": "/k"}`, 1), "key.name"},
		"vault no field":    {strings.Replace(one(""), key, `{"name": "k", "vault": {"path": "secret/data/a"}}`, 1), "path and field"},
		"hash on cloud-cdn": {one(`, "hash": "sha256"`), "hash"},
		"sha512":            {strings.Replace(one(`, "hash": "sha512"`), "cloud-cdn", "cloudfront", 1), "hash"},
		"media cookies":     {strings.Replace(one(`, "cookies": true`), "cloud-cdn", "media-cdn", 1), "cookies"},
		"bad signature":     {one(`, "signature": "prefix"`), `signature "prefix": want url (the default) or url-prefix`},
		"empty signature":   {one(`, "signature": " "`), "want url (the default) or url-prefix"},
		"signature case":    {one(`, "signature": "URL-PREFIX"`), "want url (the default) or url-prefix"},
		"cf signature":      {strings.Replace(one(`, "signature": "url-prefix"`), "cloud-cdn", "cloudfront", 1), "only cloud-cdn takes a signature"},
		"media signature":   {strings.Replace(one(`, "signature": "url-prefix"`), "cloud-cdn", "media-cdn", 1), "only cloud-cdn takes a signature"},
		"akamai signature":  {strings.Replace(one(`, "signature": "url"`), "cloud-cdn", "akamai", 1), "only cloud-cdn takes a signature"},
		"prev no times":     {one(`, "previous_key": {"name": "old", "file": "/o"}`), "previous_key needs"},
		"prev too short": {strings.Replace(one(`, "previous_key": {"name": "old", "file": "/o", "until": "`+until+`"}`), key, `{"name": "k", "file": "/k", "not_before": "`+nb+`"}`, 1),
			"less than one token TTL"},
		"future key alone":    {strings.Replace(one(""), key, `{"name": "k", "file": "/k", "not_before": "`+nb+`"}`, 1), "nothing to sign with"},
		"until on key":        {strings.Replace(one(""), key, `{"name": "k", "file": "/k", "until": "`+nb+`"}`, 1), "key.until"},
		"same name twice":     {`{"cdns": [` + strings.Repeat(`{"name": "a", "kind": "akamai", "base_url": "https://a.example", "key": `+key+`},`, 2) + `{"name": "b", "kind": "akamai", "base_url": "https://a.example", "key": ` + key + `}]}`, "used twice"},
		"too many":            {`{"cdns": [` + strings.TrimSuffix(strings.Repeat(`{"name": "a", "kind": "akamai", "base_url": "https://a.example", "key": `+key+`},`, 17), ",") + `]}`, "at most 16"},
		"huge":                {`{"cdns": [], "x": "` + strings.Repeat("a", maxConfigBytes) + `"}`, "invalid JSON"},
		"purge inline secret": {kindPurge("cloudfront", `"distribution_id": "E1", "access_key_id": {"file": "/a"}, "secret_access_key": "c2VjcmV0"`), "invalid JSON"},
		"purge unknown field": {kindPurge("akamai", `"host": "h", "client_token": {"file": "/a"}, "client_secret": {"file": "/b"}, "access_token": {"file": "/c"}, "edgerc": "/x"`), "invalid JSON"},
		"media purge":         {kindPurge("media-cdn", `"project": "p"`), "cdns[0] (a): purge: Media CDN purges are not supported"},
		"cf no distribution":  {kindPurge("cloudfront", `"access_key_id": {"file": "/a"}, "secret_access_key": {"file": "/b"}`), "cdns[0] (a): purge.distribution_id is required for cloudfront purges"},
		"cf no secret":        {kindPurge("cloudfront", `"distribution_id": "E1", "access_key_id": {"file": "/a"}`), "purge.secret_access_key is required for cloudfront purges"},
		"cf akamai field":     {kindPurge("cloudfront", `"distribution_id": "E1", "access_key_id": {"file": "/a"}, "secret_access_key": {"file": "/b"}, "network": "staging"`), "purge.network: cloudfront purges do not take it"},
		"cf http endpoint":    {kindPurge("cloudfront", `"distribution_id": "E1", "access_key_id": {"file": "/a"}, "secret_access_key": {"file": "/b"}, "endpoint": "http://cloudfront.example"`), "purge.endpoint \"http://cloudfront.example\": want https (http only to a loopback address)"},
		"cf endpoint query":   {kindPurge("cloudfront", `"distribution_id": "E1", "access_key_id": {"file": "/a"}, "secret_access_key": {"file": "/b"}, "endpoint": "https://e.example/?a=b"`), "without query"},
		"gcdn no url map":     {kindPurge("cloud-cdn", `"project": "p", "credentials": {"file": "/a"}`), "purge.url_map is required for cloud-cdn purges"},
		"gcdn cf field":       {kindPurge("cloud-cdn", `"project": "p", "url_map": "m", "credentials": {"file": "/a"}, "distribution_id": "E1"`), "purge.distribution_id: cloud-cdn purges do not take it"},
		"gcdn both refs":      {kindPurge("cloud-cdn", `"project": "p", "url_map": "m", "credentials": {"file": "/a", "vault": {"path": "custody-cdn/data/g", "field": "sa"}}`), "purge.credentials: want exactly one of file and vault"},
		"gcdn vault no field": {kindPurge("cloud-cdn", `"project": "p", "url_map": "m", "credentials": {"vault": {"path": "custody-cdn/data/g"}}`), "purge.credentials.vault: path and field are required"},
		"akamai no token":     {kindPurge("akamai", `"host": "h", "client_secret": {"file": "/b"}, "access_token": {"file": "/c"}`), "purge.client_token is required for akamai purges"},
		"akamai no host":      {kindPurge("akamai", `"client_token": {"file": "/a"}, "client_secret": {"file": "/b"}, "access_token": {"file": "/c"}`), "purge.host is required"},
		"akamai network":      {kindPurge("akamai", `"host": "h", "client_token": {"file": "/a"}, "client_secret": {"file": "/b"}, "access_token": {"file": "/c"}, "network": "all"`), `purge.network "all": want production (the default) or staging`},
		"akamai endpoint":     {kindPurge("akamai", `"host": "h", "client_token": {"file": "/a"}, "client_secret": {"file": "/b"}, "access_token": {"file": "/c"}, "endpoint": "https://x"`), "purge.endpoint: akamai purges do not take it"},
		"purge secret until":  {kindPurge("akamai", `"host": "h", "client_token": {"file": "/a"}, "client_secret": {"file": "/b", "until": "`+until+`"}, "access_token": {"file": "/c"}`), "purge.client_secret: not_before and until are for signing keys"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.cfg), ttl, now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	for _, ok := range []string{
		kindPurge("cloudfront", `"distribution_id": "E1", "access_key_id": {"file": "/a"}, "secret_access_key": {"vault": {"path": "custody-cdn/data/cf", "field": "secret"}}, "endpoint": "http://127.0.0.1:9"`),
		kindPurge("cloud-cdn", `"project": "p", "url_map": "m", "credentials": {"file": "/a"}, "endpoint": "https://compute.example/compute/v1/", "ca_file": "/ca.pem"`),
		kindPurge("akamai", `"host": "akab-x.luna.akamaiapis.net", "client_token": {"file": "/a"}, "client_secret": {"name": "edgerc", "file": "/b"}, "access_token": {"file": "/c"}, "network": "staging"`),
	} {
		if _, err := Parse([]byte(ok), ttl, now); err != nil {
			t.Errorf("purge config %s: %v", ok, err)
		}
	}
	for _, sig := range []string{"url", "url-prefix"} {
		if _, err := Parse([]byte(one(`, "signature": "`+sig+`"`)), ttl, now); err != nil {
			t.Errorf("cloud-cdn signature %q: %v", sig, err)
		}
	}
	// Every problem is reported at once.
	_, err := Parse([]byte(`{"cdns": [{"name": "A", "kind": "x", "base_url": "ftp://x", "key": {}}]}`), ttl, now)
	for _, w := range []string{"name", "kind", "base_url", "exactly one"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("combined error %v lacks %q", err, w)
		}
	}
}

func TestLoadRefusesMissingOrBadKeys(t *testing.T) {
	k := writeKeys(t)
	for name, tc := range map[string]struct{ kind, file, want string }{
		"missing file":    {"cloud-cdn", filepath.Join(k.dir, "nope.key"), "no such file"},
		"directory":       {"cloud-cdn", k.dir, "not a regular file"},
		"wrong kind":      {"cloud-cdn", k.cloudFront, "base64url"},
		"pem for akamai":  {"akamai", k.cloudFront, "hex"},
		"hex for media":   {"media-cdn", k.akam, "Ed25519"},
		"b64 for cf":      {"cloudfront", k.cloudCDN, "PEM"},
		"empty":           {"akamai", writeConfig(t, t.TempDir(), ""), "hex"},
		"large key file":  {"akamai", writeConfig(t, t.TempDir(), strings.Repeat("0", maxKeyBytes+1)), "larger than"},
		"vault, no vault": {"akamai", "", "no Vault"},
	} {
		t.Run(name, func(t *testing.T) {
			ref := fmt.Sprintf(`{"name": "k", "file": %q}`, tc.file)
			if tc.file == "" {
				ref = `{"name": "k", "vault": {"path": "secret/data/x", "field": "k"}}`
			}
			cfg := fmt.Sprintf(`{"cdns": [{"name": "a", "kind": %q, "base_url": "https://a.example", "key": %s}]}`, tc.kind, ref)
			_, err := Load(t.Context(), writeConfig(t, t.TempDir(), cfg), ttl, now, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "CDN a key k") && name != "missing config" {
				t.Errorf("err = %v, want it to name the CDN and key and mention %q", err, tc.want)
			}
		})
	}
	if _, err := Load(t.Context(), filepath.Join(k.dir, "none.json"), ttl, now, nil); err == nil || !strings.Contains(err.Error(), "read CDN configuration") {
		t.Errorf("missing config: %v", err)
	}
}

// FuzzParse: the configuration parser never panics, and what it accepts
// names a known kind and an https base URL.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"cdns": [{"name": "a", "kind": "akamai", "base_url": "https://a.example", "key": {"name": "k", "file": "/k"}}]}`))
	f.Add([]byte(`{"cdns": []}`))
	f.Add([]byte(`{"cdns": [{"name": "a", "kind": "cloud-cdn", "signature": "url-prefix", "base_url": "https://a.example", "key": {"name": "k", "file": "/k"}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, ttl, now)
		if err != nil {
			return
		}
		for _, e := range c.CDNs {
			if u, err := url.Parse(e.BaseURL); err != nil || u.Scheme != "https" {
				t.Fatalf("accepted base URL %q", e.BaseURL)
			}
			if _, err := newMinter(e, "k", nil); err != nil && strings.Contains(err.Error(), "unknown CDN kind") {
				t.Fatalf("accepted kind %q", e.Kind)
			}
			if e.Signature != "" && (e.Kind != KindCloudCDN || e.Signature != SignatureURL && e.Signature != SignatureURLPrefix) {
				t.Fatalf("accepted signature %q for %s", e.Signature, e.Kind)
			}
		}
	})
}

// TestLoadPurgeCredentials: Load reads each purge credential from its
// file, trims token files, keeps the JSON key as it is, names the CDN and
// field of an unreadable one, and never shows a credential in String,
// %v, %#v or a log line.
func TestLoadPurgeCredentials(t *testing.T) {
	k := writeKeys(t)
	write := func(name, body string) string {
		p := filepath.Join(k.dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const (
		akid, cfSecret             = "AKIDPURGETEST", "cf-secret-value"
		clientTok, clientSec, acct = "akab-client-tok", "akamai-secret-value", "akab-access-tok"
		saJSON                     = `{"type": "service_account", "private_key": "sa-private-value"}`
	)
	cfg := fmt.Sprintf(`{"cdns": [
  {"name": "cf", "kind": "cloudfront", "base_url": "https://d111.cloudfront.net/cdn", "key": {"name": "K2JCJMDEHXQW5F", "file": %q},
   "purge": {"distribution_id": "EDFDVBD6EXAMPLE", "access_key_id": {"file": %q}, "secret_access_key": {"file": %q}}},
  {"name": "gcdn", "kind": "cloud-cdn", "base_url": "https://gcdn.example.com", "key": {"name": "gkey", "file": %q},
   "purge": {"project": "custody-prod", "url_map": "custody-cdn", "credentials": {"file": %q}}},
  {"name": "ak", "kind": "akamai", "base_url": "https://dl.akamaized.example", "key": {"name": "ak1", "file": %q},
   "purge": {"host": "akab-x.luna.akamaiapis.net", "client_token": {"file": %q}, "client_secret": {"file": %q}, "access_token": {"file": %q}}},
  {"name": "media", "kind": "media-cdn", "base_url": "https://media.example.com", "key": {"name": "mkey", "file": %q}}]}`,
		k.cloudFront, write("akid", akid+"\n"), write("cfsecret", "  "+cfSecret+"\n"), k.cloudCDN, write("sa.json", saJSON),
		k.akam, write("ct", clientTok), write("cs", clientSec+"\n"), write("at", acct+"\r\n"), k.mediaCDN)
	cs, err := Load(t.Context(), writeConfig(t, k.dir, cfg), ttl, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, g, ak := cs[0].Purge(), cs[1].Purge(), cs[2].Purge()
	if cs[3].Purge() != nil {
		t.Error("media-cdn without purge section has purge access")
	}
	if cf.AccessKeyID != akid || cf.SecretAccessKey != cfSecret || cf.DistributionID != "EDFDVBD6EXAMPLE" || cf.BaseURL.Path != "/cdn" {
		t.Errorf("cloudfront %+v", *cf)
	}
	if string(g.Credentials) != saJSON || g.Project != "custody-prod" || g.URLMap != "custody-cdn" || g.BaseURL.Host != "gcdn.example.com" {
		t.Errorf("cloud-cdn %s", g.Credentials)
	}
	if ak.ClientToken != clientTok || ak.ClientSecret != clientSec || ak.AccessToken != acct || ak.Network != "production" {
		t.Errorf("akamai %q %q %q %q", ak.ClientToken, ak.ClientSecret, ak.AccessToken, ak.Network)
	}
	var logged bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logged, nil))
	for _, p := range []*PurgeAccess{cf, g, ak} {
		log.Info("purge", "cdn", p, "value", *p)
		for _, shown := range []string{p.String(), fmt.Sprint(p), fmt.Sprintf("%v %+v %#v %s", *p, *p, *p, p), logged.String(), cs[0].String(), cs[1].String(), cs[2].String()} {
			for _, secret := range []string{cfSecret, "sa-private-value", clientSec, acct, clientTok, akid} {
				if strings.Contains(shown, secret) {
					t.Errorf("%q shows a credential", shown)
				}
			}
		}
	}
	if !strings.Contains(cf.String(), "cloudfront cf purges (distribution EDFDVBD6EXAMPLE)") {
		t.Errorf("String %q", cf.String())
	}

	for name, tc := range map[string]struct{ file, want string }{
		"missing":   {filepath.Join(k.dir, "none"), "CDN ak purge.client_secret: read key file"},
		"two lines": {write("two", "a\nb\n"), "CDN ak purge.client_secret: want one value without spaces or line breaks"},
		"empty":     {write("empty", "\n"), "CDN ak purge.client_secret: want one value"},
	} {
		t.Run(name, func(t *testing.T) {
			c := fmt.Sprintf(`{"cdns": [{"name": "ak", "kind": "akamai", "base_url": "https://dl.akamaized.example", "key": {"name": "ak1", "file": %q},
   "purge": {"host": "h", "client_token": {"file": %q}, "client_secret": {"file": %q}, "access_token": {"file": %q}}}]}`,
				k.akam, write("ct", clientTok), tc.file, write("at", acct))
			_, err := Load(t.Context(), writeConfig(t, t.TempDir(), c), ttl, now, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want %q", err, tc.want)
			}
		})
	}
	// A credential in Vault without a Vault configured.
	c := fmt.Sprintf(`{"cdns": [{"name": "gcdn", "kind": "cloud-cdn", "base_url": "https://g.example", "key": {"name": "gkey", "file": %q},
   "purge": {"project": "p", "url_map": "m", "credentials": {"vault": {"path": "custody-cdn/data/gcdn", "field": "sa"}}}}]}`, k.cloudCDN)
	if _, err := Load(t.Context(), writeConfig(t, t.TempDir(), c), ttl, now, nil); err == nil || !strings.Contains(err.Error(), "CDN gcdn purge.credentials: the key is in Vault but the broker has no Vault") {
		t.Errorf("vault credential without Vault: %v", err)
	}
}
