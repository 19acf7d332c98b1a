// Package akamai purges Akamai through Fast Purge (CCU) v3, signing each
// request with Akamai's EdgeGrid library.
package akamai

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/akamai/AkamaiOPEN-edgegrid-golang/edgegrid"

	"github.com/custody-dev/custody/services/cdn-broker/internal/purge"
)

// Purger invalidates URLs with POST /ccu/v3/invalidate/url/{network}.
type Purger struct {
	cfg     edgegrid.Config
	network string
	base    string
	client  *http.Client
}

// Config configures a Purger. The three credentials come from the API
// client's .edgerc section, read by the caller from a file; they are never
// logged.
type Config struct {
	// Host is the API host of the credentials (akab-….luna.akamaiapis.net).
	Host                                   string
	ClientToken, ClientSecret, AccessToken string
	// Network is production (default) or staging.
	Network string
	// BaseURL is the CDN's base URL; purged objects are URLs under it.
	BaseURL string
	// HTTPClient is optional (tests pass one that trusts a loopback TLS
	// server).
	HTTPClient *http.Client
}

var hostRE = regexp.MustCompile(`^[A-Za-z0-9.-]+(:[0-9]{1,5})?$`)

// New returns a purger.
func New(c Config) (*Purger, error) {
	if !hostRE.MatchString(c.Host) {
		return nil, fmt.Errorf("%w: Akamai API host %q", purge.ErrInvalid, c.Host)
	}
	if c.ClientToken == "" || c.ClientSecret == "" || c.AccessToken == "" {
		return nil, fmt.Errorf("%w: Akamai purges need client_token, client_secret and access_token", purge.ErrInvalid)
	}
	switch c.Network {
	case "":
		c.Network = "production"
	case "production", "staging":
	default:
		return nil, fmt.Errorf("%w: Akamai network %q: want production or staging", purge.ErrInvalid, c.Network)
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" {
		return nil, fmt.Errorf("%w: Akamai base URL %q", purge.ErrInvalid, c.BaseURL)
	}
	client := c.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	return &Purger{
		cfg:     edgegrid.Config{Host: c.Host, ClientToken: c.ClientToken, ClientSecret: c.ClientSecret, AccessToken: c.AccessToken, MaxBody: 131072},
		network: c.Network, base: strings.TrimSuffix(c.BaseURL, "/"), client: client,
	}, nil
}

// Purge invalidates the digest's URL and returns Fast Purge's purgeId.
// Fast Purge has no idempotency key; ref is checked and only names the
// purge in errors.
func (p *Purger) Purge(ctx context.Context, d, ref string) (string, error) {
	path, err := purge.BlobPath("", d, ref)
	if err != nil {
		return "", err
	}
	obj := p.base + path
	body, _ := json.Marshal(map[string][]string{"objects": {obj}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+p.cfg.Host+"/ccu/v3/invalidate/url/"+p.network, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req = edgegrid.AddRequestHeader(p.cfg, req)
	resp, err := p.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("Akamai Fast Purge of %s (%s): %w", obj, ref, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var out struct {
		HTTPStatus int    `json:"httpStatus"`
		Detail     string `json:"detail"`
		PurgeID    string `json:"purgeId"`
		Title      string `json:"title"`
	}
	_ = json.Unmarshal(b, &out)
	if resp.StatusCode != http.StatusCreated || out.PurgeID == "" {
		return "", fmt.Errorf("Akamai Fast Purge of %s (%s): HTTP %d %s%s", obj, ref, resp.StatusCode, out.Title, out.Detail)
	}
	return out.PurgeID, nil
}
