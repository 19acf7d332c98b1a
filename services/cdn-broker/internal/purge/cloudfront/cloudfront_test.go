package cloudfront

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/custody-dev/custody/services/cdn-broker/internal/purge"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purge/purgetest"
)

const (
	testDigest = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	akid       = "AKIDCUSTODYTEST"
	secret     = "c3VwZXItc2VjcmV0LWtleS1mb3ItdGVzdHM"
)

func TestCloudFrontPurge(t *testing.T) {
	fake := &purgetest.CloudFront{DistributionID: "EDFDVBD6EXAMPLE", AccessKeyID: akid, SecretAccessKey: secret}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	p, err := New(Config{DistributionID: "EDFDVBD6EXAMPLE", BasePath: "/cdn/", AccessKeyID: akid, SecretAccessKey: secret, Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	id, err := p.Purge(t.Context(), testDigest, "rev-1")
	if err != nil {
		t.Fatalf("purge: %v (server saw %v)", err, fake.Problems())
	}
	inv := fake.Invalidations()
	if id != "I0000000000001" || len(inv) != 1 {
		t.Fatalf("id %q, invalidations %+v", id, inv)
	}
	if inv[0].CallerReference != "rev-1" || len(inv[0].Paths) != 1 || inv[0].Paths[0] != "/cdn/v1/blobs/sha256/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" {
		t.Errorf("invalidation %+v", inv[0])
	}

	// Wrong secret: the endpoint refuses the signature and Purge fails.
	wrong, _ := New(Config{DistributionID: "EDFDVBD6EXAMPLE", AccessKeyID: akid, SecretAccessKey: "wrong", Endpoint: srv.URL})
	if _, err := wrong.Purge(t.Context(), testDigest, "rev-2"); err == nil || !strings.Contains(err.Error(), "SignatureDoesNotMatch") {
		t.Errorf("wrong secret: %v", err)
	}
	if strings.Contains(strings.Join(fake.Problems(), " "), secret) {
		t.Error("secret in a request")
	}

	// Hostile input never reaches the API.
	n := len(fake.Invalidations()) + len(fake.Problems())
	for _, tc := range []struct{ d, ref string }{
		{"sha256:../../etc", "r"}, {"SHA256:" + strings.Repeat("a", 64), "r"}, {testDigest, ""}, {testDigest, "a b"}, {testDigest, strings.Repeat("r", 65)},
	} {
		if _, err := p.Purge(t.Context(), tc.d, tc.ref); !errors.Is(err, purge.ErrInvalid) {
			t.Errorf("Purge(%q, %q) = %v, want purge.ErrInvalid", tc.d, tc.ref, err)
		}
	}
	if len(fake.Invalidations())+len(fake.Problems()) != n {
		t.Error("an invalid purge reached the API")
	}

	// API down: a clear error, not a hang.
	srv.Close()
	if _, err := p.Purge(t.Context(), testDigest, "rev-3"); err == nil || !strings.Contains(err.Error(), "CloudFront invalidation") {
		t.Errorf("API down: %v", err)
	}
	for _, c := range []Config{{AccessKeyID: akid, SecretAccessKey: secret}, {DistributionID: "E/../x", AccessKeyID: akid, SecretAccessKey: secret}, {DistributionID: "E1"}} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}
