// Package cloudcdn purges Cloud CDN through its own API client.
package cloudcdn

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"regexp"

	"golang.org/x/oauth2"
	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/option"

	"github.com/custody-dev/custody/services/cdn-broker/internal/purge"
)

// Purger purges through Compute Engine's urlMaps.invalidateCache, the API
// behind `gcloud compute url-maps invalidate-cdn-cache`.
type Purger struct {
	svc             *compute.Service
	project, urlMap string
	host, basePath  string
}

// Config configures a Cloud CDN purger.
type Config struct {
	Project, URLMap string
	// Host limits the invalidation to the CDN's host name (recommended).
	Host     string
	BasePath string
	// Tokens authorizes the calls (from a service account key file in
	// production: google.CredentialsFromJSON(...).TokenSource).
	Tokens oauth2.TokenSource
	// Endpoint overrides the API endpoint (tests); empty: Google's.
	Endpoint string
	// HTTPClient is optional: the client the calls go through (a custom
	// CA, a timeout), with Tokens' bearer token added to each request.
	HTTPClient *http.Client
}

var gceName = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)

// New returns a purger for one URL map.
func New(ctx context.Context, c Config) (*Purger, error) {
	if !gceName.MatchString(c.Project) || !gceName.MatchString(c.URLMap) {
		return nil, fmt.Errorf("%w: Cloud CDN project %q or URL map %q is not a Compute Engine name", purge.ErrInvalid, c.Project, c.URLMap)
	}
	if c.Tokens == nil {
		return nil, fmt.Errorf("%w: Cloud CDN purges need credentials", purge.ErrInvalid)
	}
	opts := []option.ClientOption{option.WithTokenSource(c.Tokens)}
	if hc := c.HTTPClient; hc != nil {
		// WithHTTPClient replaces every other auth option: the token
		// goes on through the client's own transport.
		base := hc.Transport
		if base == nil {
			base = http.DefaultTransport
		}
		opts = []option.ClientOption{option.WithHTTPClient(&http.Client{Transport: &oauth2.Transport{Source: c.Tokens, Base: base}, Timeout: hc.Timeout})}
	}
	if c.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(c.Endpoint))
	}
	svc, err := compute.NewService(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("Cloud CDN client: %w", err)
	}
	return &Purger{svc: svc, project: c.Project, urlMap: c.URLMap, host: c.Host, basePath: c.BasePath}, nil
}

// requestID turns a reference into the UUID Compute Engine wants as a
// request ID, so that a retry with the same reference is not run twice.
func requestID(ref string) string {
	s := sha256.Sum256([]byte("custody-purge\x00" + ref))
	s[6] = s[6]&0x0f | 0x50 // version 5 layout (name-based)
	s[8] = s[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16])
}

// Purge invalidates the digest's path and returns the operation's name.
func (p *Purger) Purge(ctx context.Context, d, ref string) (string, error) {
	path, err := purge.BlobPath(p.basePath, d, ref)
	if err != nil {
		return "", err
	}
	op, err := p.svc.UrlMaps.InvalidateCache(p.project, p.urlMap, &compute.CacheInvalidationRule{Path: path, Host: p.host}).
		RequestId(requestID(ref)).Context(ctx).Do()
	if err != nil {
		return "", fmt.Errorf("Cloud CDN invalidation of %s on URL map %s: %w", path, p.urlMap, err)
	}
	if op.Error != nil && len(op.Error.Errors) > 0 {
		return "", fmt.Errorf("Cloud CDN invalidation of %s: %s", path, op.Error.Errors[0].Message)
	}
	return op.Name, nil
}
