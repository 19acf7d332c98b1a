package cdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
)

// Purge is an entry's optional "purge" section: the vendor API through
// which the broker drops a revoked digest's path from the CDN's caches
// (decision 0124). Which fields a kind takes:
//
//	cloudfront  distribution_id, access_key_id, secret_access_key[, endpoint][, ca_file]
//	cloud-cdn   project, url_map, credentials[, endpoint][, ca_file]
//	akamai      host, client_token, client_secret, access_token[, network][, ca_file]
//
// media-cdn takes none: its purges are not implemented. Every credential is
// a KeyRef (file or Vault field), never a value in the configuration; a
// KeyRef's name is an optional label, not_before and until are refused.
type Purge struct {
	// DistributionID is the CloudFront distribution in front of the edges.
	DistributionID string `json:"distribution_id,omitempty"`
	// AccessKeyID and SecretAccessKey are the IAM user's key for
	// cloudfront:CreateInvalidation on that distribution.
	AccessKeyID     *KeyRef `json:"access_key_id,omitempty"`
	SecretAccessKey *KeyRef `json:"secret_access_key,omitempty"`

	// Project and URLMap name the Cloud CDN URL map (Compute Engine).
	Project string `json:"project,omitempty"`
	URLMap  string `json:"url_map,omitempty"`
	// Credentials is a service account's JSON key with
	// compute.urlMaps.invalidateCache on the URL map.
	Credentials *KeyRef `json:"credentials,omitempty"`

	// Host is the Akamai API client's host (akab-….luna.akamaiapis.net);
	// ClientToken, ClientSecret and AccessToken are its .edgerc values.
	Host         string  `json:"host,omitempty"`
	ClientToken  *KeyRef `json:"client_token,omitempty"`
	ClientSecret *KeyRef `json:"client_secret,omitempty"`
	AccessToken  *KeyRef `json:"access_token,omitempty"`
	// Network is production (the default) or staging.
	Network string `json:"network,omitempty"`

	// Endpoint (cloudfront, cloud-cdn) replaces the vendor's API URL: a
	// VPC or private endpoint, or a loopback test API. https, or http to a
	// loopback address only.
	Endpoint string `json:"endpoint,omitempty"`
	// CAFile is a PEM file of the CA certificates the API's TLS certificate
	// must chain to instead of the system roots (an egress proxy that
	// re-signs TLS, or a test API).
	CAFile string `json:"ca_file,omitempty"`
}

// checkPurge appends to bad every problem of e's purge section.
func checkPurge(e Entry, bad func(format string, args ...any)) {
	p := e.Purge
	if p == nil {
		return
	}
	type field struct {
		name string
		set  bool
	}
	type secret struct {
		name string
		ref  *KeyRef
	}
	var need []secret
	var strs []field
	only := map[string]bool{}
	switch e.Kind {
	case KindMediaCDN:
		bad("purge: Media CDN purges are not supported: remove the purge section and invalidate through `gcloud edge-cache services invalidate-cache` (see docs/runbooks/purges.md)")
		return
	case KindCloudFront:
		need = []secret{{"access_key_id", p.AccessKeyID}, {"secret_access_key", p.SecretAccessKey}}
		strs = []field{{"distribution_id", p.DistributionID != ""}}
		only = map[string]bool{"endpoint": true}
	case KindCloudCDN:
		need = []secret{{"credentials", p.Credentials}}
		strs = []field{{"project", p.Project != ""}, {"url_map", p.URLMap != ""}}
		only = map[string]bool{"endpoint": true}
	case KindAkamai:
		need = []secret{{"client_token", p.ClientToken}, {"client_secret", p.ClientSecret}, {"access_token", p.AccessToken}}
		strs = []field{{"host", p.Host != ""}}
		only = map[string]bool{"network": true}
	default:
		return // the kind is reported already
	}
	for _, f := range strs {
		if !f.set {
			bad("purge.%s is required for %s purges", f.name, e.Kind)
		}
	}
	for _, s := range need {
		if s.ref == nil {
			bad("purge.%s is required for %s purges (a file or a Vault field)", s.name, e.Kind)
		}
	}
	// Fields of another kind are mistakes, not options.
	wanted := map[string]bool{}
	for _, s := range need {
		wanted[s.name] = true
	}
	for _, f := range strs {
		wanted[f.name] = true
	}
	for _, f := range []field{
		{"distribution_id", p.DistributionID != ""}, {"access_key_id", p.AccessKeyID != nil}, {"secret_access_key", p.SecretAccessKey != nil},
		{"project", p.Project != ""}, {"url_map", p.URLMap != ""}, {"credentials", p.Credentials != nil},
		{"host", p.Host != ""}, {"client_token", p.ClientToken != nil}, {"client_secret", p.ClientSecret != nil}, {"access_token", p.AccessToken != nil},
		{"network", p.Network != ""}, {"endpoint", p.Endpoint != ""},
	} {
		if f.set && !wanted[f.name] && !only[f.name] {
			bad("purge.%s: %s purges do not take it", f.name, e.Kind)
		}
	}
	for _, s := range need {
		r := s.ref
		if r == nil {
			continue
		}
		if (r.File == "") == (r.Vault == nil) {
			bad("purge.%s: want exactly one of file and vault", s.name)
		}
		if r.Vault != nil && (r.Vault.Path == "" || r.Vault.Field == "") {
			bad("purge.%s.vault: path and field are required", s.name)
		}
		if r.NotBefore != nil || r.Until != nil {
			bad("purge.%s: not_before and until are for signing keys; rotate purge credentials by changing the file or Vault field and restarting", s.name)
		}
	}
	if p.Network != "" && p.Network != "production" && p.Network != "staging" {
		bad("purge.network %q: want production (the default) or staging", p.Network)
	}
	if p.Endpoint != "" && only["endpoint"] {
		u, err := url.Parse(p.Endpoint)
		switch {
		case err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
			bad("purge.endpoint %q: want https://host[:port][/path] without query, fragment or credentials", p.Endpoint)
		case u.Scheme == "https":
		case u.Scheme == "http" && isLoopback(u.Hostname()):
		default:
			bad("purge.endpoint %q: want https (http only to a loopback address): the API calls carry credentials", p.Endpoint)
		}
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// PurgeAccess is a CDN's purge section with its credentials read, for the
// broker to build the vendor's client from. Its String, GoString and
// LogValue name the CDN and the non-secret fields only; the secret fields
// must not be logged or returned.
type PurgeAccess struct {
	// CDN and Kind are the entry's name and kind.
	CDN, Kind string
	// BaseURL is the entry's base URL: purged objects are paths under it.
	BaseURL *url.URL

	DistributionID, Project, URLMap, Host, Network, Endpoint, CAFile string

	// Secrets (whitespace around token values is trimmed; the JSON key is
	// kept as read).
	AccessKeyID, SecretAccessKey           string
	ClientToken, ClientSecret, AccessToken string
	Credentials                            []byte
}

// String names the CDN and where its purges go, never a credential.
func (p PurgeAccess) String() string {
	switch p.Kind {
	case KindCloudFront:
		return fmt.Sprintf("%s %s purges (distribution %s)", p.Kind, p.CDN, p.DistributionID)
	case KindCloudCDN:
		return fmt.Sprintf("%s %s purges (project %s, URL map %s)", p.Kind, p.CDN, p.Project, p.URLMap)
	}
	return fmt.Sprintf("%s %s purges (host %s, network %s)", p.Kind, p.CDN, p.Host, p.Network)
}

// GoString is String, so that %#v shows no credential either.
func (p PurgeAccess) GoString() string { return p.String() }

// LogValue is String, so that slog shows no credential either.
func (p PurgeAccess) LogValue() slog.Value { return slog.StringValue(p.String()) }

// Purge returns the CDN's purge access, nil if its entry has no purge
// section.
func (c *CDN) Purge() *PurgeAccess { return c.purge }

// loadPurge reads the credentials of e's purge section.
func loadPurge(ctx context.Context, e Entry, base *url.URL, vault SecretReader) (*PurgeAccess, error) {
	p := e.Purge
	a := &PurgeAccess{CDN: e.Name, Kind: e.Kind, BaseURL: base, DistributionID: p.DistributionID, Project: p.Project, URLMap: p.URLMap,
		Host: p.Host, Network: p.Network, Endpoint: p.Endpoint, CAFile: p.CAFile}
	if a.Kind == KindAkamai && a.Network == "" {
		a.Network = "production"
	}
	var errs []error
	token := func(field string, r *KeyRef) string {
		b, err := readKey(ctx, r, vault)
		if err != nil {
			errs = append(errs, fmt.Errorf("CDN %s purge.%s: %w", e.Name, field, err))
			return ""
		}
		s := strings.TrimSpace(string(b))
		clear(b)
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			errs = append(errs, fmt.Errorf("CDN %s purge.%s: want one value without spaces or line breaks", e.Name, field))
			return ""
		}
		return s
	}
	switch e.Kind {
	case KindCloudFront:
		a.AccessKeyID = token("access_key_id", p.AccessKeyID)
		a.SecretAccessKey = token("secret_access_key", p.SecretAccessKey)
	case KindCloudCDN:
		b, err := readKey(ctx, p.Credentials, vault)
		if err != nil {
			errs = append(errs, fmt.Errorf("CDN %s purge.credentials: %w", e.Name, err))
		}
		a.Credentials = b
	case KindAkamai:
		a.ClientToken = token("client_token", p.ClientToken)
		a.ClientSecret = token("client_secret", p.ClientSecret)
		a.AccessToken = token("access_token", p.AccessToken)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return a, nil
}
