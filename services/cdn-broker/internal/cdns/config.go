package cdns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"time"

	"github.com/custody-dev/custody/libs/strictjson"
)

// Limits on what a configuration may hold.
const (
	maxConfigBytes = 1 << 20
	maxKeyBytes    = 64 << 10
	maxCDNs        = 16
)

// File is the CDN configuration file (JSON, unknown keys refused):
//
//	{"cdns": [{"name": "gcdn", "kind": "cloud-cdn", "base_url": "https://cdn.example.com",
//	           "key": {"name": "key-2", "file": "/etc/custody/cdn/gcdn-2.key", "not_before": "2026-12-03T00:00:00Z"},
//	           "previous_key": {"name": "key-1", "vault": {"path": "secret/data/cdn/gcdn", "field": "key-1"},
//	                            "until": "2026-12-03T01:00:00Z"},
//	           "signature": "url-prefix", "cookies": true,
//	           "purge": {"project": "custody-prod", "url_map": "custody-cdn",
//	                     "credentials": {"file": "/etc/custody/cdn/gcdn-purger.json"}}}]}
type File struct {
	CDNs []Entry `json:"cdns"`
}

// Entry configures one CDN.
type Entry struct {
	// Name identifies the CDN in responses and logs.
	Name string `json:"name"`
	// Kind is cloud-cdn, media-cdn, cloudfront or akamai.
	Kind string `json:"kind"`
	// BaseURL is https://host[/path] of the CDN in front of the edges.
	BaseURL string `json:"base_url"`
	// Key signs requests.
	Key KeyRef `json:"key"`
	// PreviousKey, during a rotation, signs until Key.NotBefore; the CDN
	// must accept it until PreviousKey.Until.
	PreviousKey *KeyRef `json:"previous_key,omitempty"`
	// Hash is CloudFront's signature hash, sha1 (default) or sha256.
	Hash string `json:"hash,omitempty"`
	// Cookies also mints signed cookies (cloud-cdn, cloudfront, akamai).
	Cookies bool `json:"cookies,omitempty"`
	// Signature is Cloud CDN's URL signature: SignatureURL (the default)
	// signs the whole URL, SignatureURLPrefix signs a URLPrefix that is the
	// digest's own URL. Other kinds take none.
	Signature string `json:"signature,omitempty"`
	// Purge, if set, is how the broker purges the CDN (cloudfront,
	// cloud-cdn, akamai); without it the CDN is never purged.
	Purge *Purge `json:"purge,omitempty"`
}

// Cloud CDN URL signatures (Entry.Signature).
const (
	SignatureURL       = "url"
	SignatureURLPrefix = "url-prefix"
)

// KeyRef names a key and where to read it. Exactly one of File and Vault.
// Key values never appear in the configuration itself.
type KeyRef struct {
	// Name is the key's name at the CDN: Cloud CDN key name, Media CDN
	// keyset key, CloudFront public key ID; for Akamai a label for logs.
	Name  string    `json:"name"`
	File  string    `json:"file,omitempty"`
	Vault *VaultRef `json:"vault,omitempty"`
	// NotBefore (current key only) is when the broker starts signing with
	// it; until then it signs with the previous key.
	NotBefore *time.Time `json:"not_before,omitempty"`
	// Until (previous key only) is when the CDN stops accepting it.
	Until *time.Time `json:"until,omitempty"`
}

// VaultRef is a field of a Vault KV version 2 secret.
type VaultRef struct {
	// Path is the API path under /v1/, e.g. secret/data/cdn/gcdn.
	Path  string `json:"path"`
	Field string `json:"field"`
}

// SecretReader reads a Vault secret field; *Vault implements it.
type SecretReader interface {
	ReadField(ctx context.Context, path, field string) ([]byte, error)
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Parse decodes and validates a configuration, reporting every problem at
// once. tokenTTL is the broker's URL lifetime and now the start time: a
// previous key must stay accepted for a whole TTL after the switch, so no
// URL outlives its key, and a key that is not active yet needs a previous
// key to sign with meanwhile.
func Parse(b []byte, tokenTTL time.Duration, now time.Time) (*File, error) {
	var f File
	if err := strictjson.Decode(b, maxConfigBytes, &f); err != nil {
		return nil, fmt.Errorf("CDN configuration: %w", err)
	}
	var errs []error
	bad := func(i int, format string, args ...any) {
		at := fmt.Sprintf("cdns[%d]", i)
		if n := f.CDNs[i].Name; nameRE.MatchString(n) {
			at += " (" + n + ")"
		}
		errs = append(errs, fmt.Errorf("%s: %s", at, fmt.Sprintf(format, args...)))
	}
	if len(f.CDNs) > maxCDNs {
		return nil, fmt.Errorf("CDN configuration: %d CDNs, at most %d", len(f.CDNs), maxCDNs)
	}
	seen := map[string]bool{}
	for i, e := range f.CDNs {
		if !nameRE.MatchString(e.Name) {
			bad(i, "name %q: want lowercase letters, digits and '-', at most 63", e.Name)
		} else if seen[e.Name] {
			bad(i, "name %q is used twice", e.Name)
		}
		seen[e.Name] = true
		switch e.Kind {
		case KindCloudCDN, KindMediaCDN, KindCloudFront, KindAkamai:
		default:
			bad(i, "kind %q: want cloud-cdn, media-cdn, cloudfront or akamai", e.Kind)
		}
		if u, err := url.Parse(e.BaseURL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
			bad(i, "base_url %q: want https://host[:port][/path] without query, fragment or credentials", e.BaseURL)
		}
		if e.Hash != "" && (e.Kind != KindCloudFront || (e.Hash != "sha1" && e.Hash != "sha256")) {
			bad(i, "hash %q: only cloudfront takes a hash, sha1 or sha256", e.Hash)
		}
		switch {
		case e.Signature == "":
		case e.Kind != KindCloudCDN:
			bad(i, "signature %q: only cloud-cdn takes a signature (url or url-prefix); remove it for %s", e.Signature, e.Kind)
		case e.Signature != SignatureURL && e.Signature != SignatureURLPrefix:
			bad(i, "signature %q: want url (the default) or url-prefix", e.Signature)
		}
		if e.Cookies && e.Kind == KindMediaCDN {
			bad(i, "cookies: not minted for media-cdn")
		}
		checkRef := func(what string, r *KeyRef) {
			if r.Name == "" {
				bad(i, "%s.name is required (the key's name at the CDN)", what)
			}
			if (r.File == "") == (r.Vault == nil) {
				bad(i, "%s: want exactly one of file and vault", what)
			}
			if r.Vault != nil && (r.Vault.Path == "" || r.Vault.Field == "") {
				bad(i, "%s.vault: path and field are required", what)
			}
		}
		checkRef("key", &e.Key)
		if e.Key.Until != nil {
			bad(i, "key.until: only previous_key has an end")
		}
		if p := e.PreviousKey; p != nil {
			checkRef("previous_key", p)
			switch {
			case p.NotBefore != nil:
				bad(i, "previous_key.not_before: only key has a start")
			case p.Until == nil || e.Key.NotBefore == nil:
				bad(i, "previous_key needs previous_key.until and key.not_before (when the broker switches keys)")
			case p.Until.Before(e.Key.NotBefore.Add(tokenTTL)):
				bad(i, "previous_key.until %s is less than one token TTL (%s) after key.not_before %s: URLs signed just before the switch would outlive the key",
					p.Until.UTC().Format(time.RFC3339), tokenTTL, e.Key.NotBefore.UTC().Format(time.RFC3339))
			case p.Name == e.Key.Name:
				bad(i, "previous_key and key have the same name %q", p.Name)
			}
		}
		checkPurge(e, func(format string, args ...any) { bad(i, format, args...) })
		if nb := e.Key.NotBefore; nb != nil && now.Before(*nb) && (e.PreviousKey == nil || e.PreviousKey.Until == nil || !now.Before(*e.PreviousKey.Until)) {
			bad(i, "key.not_before %s is in the future and no previous key is valid now: nothing to sign with", nb.UTC().Format(time.RFC3339))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("CDN configuration: %w", err)
	}
	return &f, nil
}

// Load reads the configuration at path, validates it and reads every key
// and purge credential, from its file or through vault (nil if nothing is in
// Vault). Any unreadable or unusable key fails the whole load: the broker
// does not start with a CDN it cannot sign for or purge.
func Load(ctx context.Context, path string, tokenTTL time.Duration, now time.Time, vault SecretReader) ([]*CDN, error) {
	b, err := readBounded(path, maxConfigBytes)
	if err != nil {
		return nil, fmt.Errorf("read CDN configuration: %w", err)
	}
	f, err := Parse(b, tokenTTL, now)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []*CDN
	var errs []error
	for _, e := range f.CDNs {
		base, _ := url.Parse(e.BaseURL)
		c := &CDN{name: e.Name, kind: e.Kind, base: base}
		load := func(r *KeyRef) (keyed, error) {
			text, err := readKey(ctx, r, vault)
			if err != nil {
				return keyed{}, fmt.Errorf("CDN %s key %s: %w", e.Name, r.Name, err)
			}
			m, err := newMinter(e, r.Name, text)
			clear(text)
			if err != nil {
				return keyed{}, fmt.Errorf("CDN %s key %s: %w", e.Name, r.Name, err)
			}
			k := keyed{name: r.Name, m: m}
			if r.NotBefore != nil {
				k.notBefore = *r.NotBefore
			}
			if r.Until != nil {
				k.until = *r.Until
			}
			return k, nil
		}
		if c.cur, err = load(&e.Key); err != nil {
			errs = append(errs, err)
		}
		if e.PreviousKey != nil {
			p, err := load(e.PreviousKey)
			if err != nil {
				errs = append(errs, err)
			}
			c.prev = &p
		}
		if e.Purge != nil {
			if c.purge, err = loadPurge(ctx, e, base, vault); err != nil {
				errs = append(errs, err)
			}
		}
		out = append(out, c)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func readKey(ctx context.Context, r *KeyRef, vault SecretReader) ([]byte, error) {
	if r.File != "" {
		b, err := readBounded(r.File, maxKeyBytes)
		if err != nil {
			return nil, fmt.Errorf("read key file: %w: check the path in the CDN configuration and that the broker can read it", err)
		}
		return b, nil
	}
	if vault == nil {
		return nil, errors.New("the key is in Vault but the broker has no Vault: set --vault-addr and --vault-token-file")
	}
	return vault.ReadField(ctx, r.Vault.Path, r.Vault.Field)
}

// readBounded reads at most max bytes of a regular file.
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}
