package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	compute "google.golang.org/api/compute/v1"

	"github.com/custody-dev/custody/services/cdn-broker/internal/cdns"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purge/akamai"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purge/cloudcdn"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purge/cloudfront"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purges"
)

// vendorTimeout bounds one call to a vendor API (the purge queue bounds
// an attempt too).
const vendorTimeout = 30 * time.Second

// cdnTargets returns a purge target for each CDN with a purge section,
// through its vendor's client. ctx outlives the targets: Cloud CDN's token
// source refreshes its token with it.
func cdnTargets(ctx context.Context, list []*cdns.CDN) ([]purges.Target, error) {
	var out []purges.Target
	var errs []error
	for _, c := range list {
		p := c.Purge()
		if p == nil {
			continue
		}
		v, err := newPurger(ctx, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("CDN %s purge: %w", p.CDN, err))
			continue
		}
		out = append(out, purges.NewCDN(p.CDN, v))
	}
	return out, errors.Join(errs...)
}

// newPurger is the one switch over the vendors.
func newPurger(ctx context.Context, p *cdns.PurgeAccess) (purges.Vendor, error) {
	client, err := vendorClient(p.CAFile)
	if err != nil {
		return nil, err
	}
	basePath := strings.TrimSuffix(p.BaseURL.Path, "/")
	switch p.Kind {
	case cdns.KindCloudFront:
		return cloudfront.New(cloudfront.Config{DistributionID: p.DistributionID, BasePath: basePath,
			AccessKeyID: p.AccessKeyID, SecretAccessKey: p.SecretAccessKey, Endpoint: p.Endpoint, HTTPClient: client})
	case cdns.KindCloudCDN:
		// The token endpoint is called through the same client (CA file).
		tctx := context.WithValue(ctx, oauth2.HTTPClient, client)
		// Only a service account key: the other credential types of
		// CredentialsFromJSON can make the broker run commands or read
		// files named in the JSON.
		creds, err := google.CredentialsFromJSONWithType(tctx, p.Credentials, google.ServiceAccount, compute.ComputeScope)
		if err != nil {
			return nil, fmt.Errorf("credentials: want a service account's JSON key: %w", err)
		}
		return cloudcdn.New(ctx, cloudcdn.Config{Project: p.Project, URLMap: p.URLMap, Host: p.BaseURL.Hostname(), BasePath: basePath,
			Tokens: creds.TokenSource, Endpoint: p.Endpoint, HTTPClient: client})
	case cdns.KindAkamai:
		return akamai.New(akamai.Config{Host: p.Host, ClientToken: p.ClientToken, ClientSecret: p.ClientSecret, AccessToken: p.AccessToken,
			Network: p.Network, BaseURL: p.BaseURL.String(), HTTPClient: client})
	}
	return nil, fmt.Errorf("%s CDNs cannot be purged", p.Kind)
}

// vendorClient is the HTTP client of a vendor API: the system roots, or
// only the CAs in caFile.
func vendorClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: vendorTimeout}, nil
}
