package command

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/transparency-dev/tessera/client"
)

// maxTileResponse bounds every body read from a tiles endpoint: a full
// tile is 8 KiB (256 hashes), a checkpoint a few hundred bytes; anything
// longer is refused, not buffered.
const maxTileResponse = 64 << 10

// tilesSource reads the log from its public HTTPS tiles (tlog-tiles:
// /checkpoint and /tile/...) and builds consistency proofs from them
// itself, so that nothing but the tiles and the trust root is trusted.
type tilesSource struct {
	url string
	f   *client.HTTPFetcher
}

// newTilesSource returns a source for the tiles under rawURL (https only),
// verifying the server with roots. It follows no redirects, and each
// request is bounded in time and size.
func newTilesSource(rawURL string, roots *x509.CertPool) (*tilesSource, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--tiles %q: want an https:// URL of the log's tiles (e.g. https://catalog.example:8443/)", rawURL)
	}
	hc := &http.Client{
		Timeout: 30 * time.Second,
		Transport: limitBody{&http.Transport{
			TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			ResponseHeaderTimeout: 15 * time.Second,
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("the tiles endpoint answered with a redirect; custody follows none: give the final URL")
		},
	}
	f, err := client.NewHTTPFetcher(u, hc)
	if err != nil {
		return nil, fmt.Errorf("--tiles %s: %w", rawURL, err)
	}
	return &tilesSource{url: u.String(), f: f}, nil
}

func (s *tilesSource) Checkpoint(ctx context.Context) ([]byte, error) {
	b, err := s.f.ReadCheckpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the checkpoint from %s: %w", s.url, err)
	}
	return b, nil
}

// Consistency builds the proof from tiles of the tree of size second; the
// caller verifies it against the checkpoint, so a tile altered in transit
// or at the server makes the proof fail, never pass.
func (s *tilesSource) Consistency(ctx context.Context, first, second uint64) ([][]byte, error) {
	pb, err := client.NewProofBuilder(ctx, second, s.f.ReadTile)
	if err != nil {
		return nil, fmt.Errorf("read tiles of the tree of %d entries from %s: %w", second, s.url, err)
	}
	p, err := pb.ConsistencyProof(ctx, first, second)
	if err != nil {
		return nil, fmt.Errorf("build a consistency proof %d → %d from the tiles at %s: %w", first, second, s.url, err)
	}
	return p, nil
}

// limitBody refuses response bodies longer than maxTileResponse.
type limitBody struct{ rt http.RoundTripper }

func (l limitBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > maxTileResponse {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: response of %d bytes, more than the %d a tile or checkpoint may have", r.URL.Path, resp.ContentLength, maxTileResponse)
	}
	resp.Body = &cappedBody{rc: resp.Body, left: maxTileResponse, path: r.URL.Path}
	return resp, nil
}

type cappedBody struct {
	rc   io.ReadCloser
	left int64
	path string
}

func (c *cappedBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// One byte more than allowed tells an endless body from one of
		// exactly the limit.
		var one [1]byte
		if n, _ := c.rc.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("%s: response longer than the %d bytes a tile or checkpoint may have", c.path, maxTileResponse)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.rc.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cappedBody) Close() error { return c.rc.Close() }
