package cloudfront

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/custody-dev/custody/services/cdn-broker/internal/purge"
)

const (
	testDigest = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	akid       = "AKIDCUSTODYTEST"
	secret     = "c3VwZXItc2VjcmV0LWtleS1mb3ItdGVzdHM"
)

// fakeCloudFront is a loopback CloudFront API endpoint that checks what
// CreateInvalidation sends: method, path, XML body and a SigV4 signature
// it recomputes with the secret it knows.
type fakeCloudFront struct {
	mu       sync.Mutex
	bodies   []string
	problems []string
}

func (f *fakeCloudFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	bad := func(format string, args ...any) {
		f.mu.Lock()
		f.problems = append(f.problems, r.Method+" "+r.URL.Path+": "+strings.TrimSpace(format))
		f.mu.Unlock()
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `<?xml version="1.0"?><ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>denied</Message></Error></ErrorResponse>`)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/2020-05-31/distribution/EDFDVBD6EXAMPLE/invalidation" {
		bad("wrong method or path")
		return
	}
	auth := r.Header.Get("Authorization")
	cred, _, _ := strings.Cut(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 Credential="), ",")
	parts := strings.Split(cred, "/")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 ") || len(parts) != 5 || parts[0] != akid || parts[2] != "us-east-1" || parts[3] != "cloudfront" {
		bad("bad credential scope")
		return
	}
	_, signedList, _ := strings.Cut(auth, "SignedHeaders=")
	signedList, gotSig, _ := strings.Cut(signedList, ", Signature=")
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		bad("no X-Amz-Date")
		return
	}
	// Re-sign the same request (only the headers it signed) and compare.
	re, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	for _, h := range strings.Split(signedList, ";") {
		if h != "host" {
			re.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(r.Context(), aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret}, re, hex.EncodeToString(sum[:]), "cloudfront", "us-east-1", when); err != nil {
		bad("re-sign")
		return
	}
	_, wantSig, _ := strings.Cut(re.Header.Get("Authorization"), ", Signature=")
	if gotSig == "" || gotSig != wantSig {
		bad("signature does not verify")
		return
	}
	f.mu.Lock()
	f.bodies = append(f.bodies, string(body))
	f.mu.Unlock()
	w.Header().Set("Location", "https://cloudfront.amazonaws.com/2020-05-31/distribution/EDFDVBD6EXAMPLE/invalidation/I2J0I21PCUYOIK")
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>
<Invalidation xmlns="http://cloudfront.amazonaws.com/doc/2020-05-31/"><Id>I2J0I21PCUYOIK</Id><Status>InProgress</Status><CreateTime>2026-12-02T12:00:00Z</CreateTime><InvalidationBatch><Paths><Quantity>1</Quantity><Items><Path>/x</Path></Items></Paths><CallerReference>rev-1</CallerReference></InvalidationBatch></Invalidation>`)
}

func TestCloudFrontPurge(t *testing.T) {
	fake := &fakeCloudFront{}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	p, err := New(Config{DistributionID: "EDFDVBD6EXAMPLE", BasePath: "/cdn/", AccessKeyID: akid, SecretAccessKey: secret, Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	id, err := p.Purge(t.Context(), testDigest, "rev-1")
	if err != nil {
		t.Fatalf("purge: %v (server saw %v)", err, fake.problems)
	}
	if id != "I2J0I21PCUYOIK" || len(fake.bodies) != 1 {
		t.Fatalf("id %q, %d requests", id, len(fake.bodies))
	}
	for _, want := range []string{"<Path>/cdn/v1/blobs/sha256/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08</Path>", "<Quantity>1</Quantity>", "<CallerReference>rev-1</CallerReference>"} {
		if !strings.Contains(fake.bodies[0], want) {
			t.Errorf("body %s lacks %s", fake.bodies[0], want)
		}
	}

	// Wrong secret: the endpoint refuses the signature and Purge fails.
	wrong, _ := New(Config{DistributionID: "EDFDVBD6EXAMPLE", AccessKeyID: akid, SecretAccessKey: "wrong", Endpoint: srv.URL})
	if _, err := wrong.Purge(t.Context(), testDigest, "rev-2"); err == nil || !strings.Contains(err.Error(), "SignatureDoesNotMatch") {
		t.Errorf("wrong secret: %v", err)
	}
	if strings.Contains(strings.Join(fake.problems, " "), secret) {
		t.Error("secret in a request")
	}

	// Hostile input never reaches the API.
	n := len(fake.bodies) + len(fake.problems)
	for _, tc := range []struct{ d, ref string }{
		{"sha256:../../etc", "r"}, {"SHA256:" + strings.Repeat("a", 64), "r"}, {testDigest, ""}, {testDigest, "a b"}, {testDigest, strings.Repeat("r", 65)},
	} {
		if _, err := p.Purge(t.Context(), tc.d, tc.ref); !errors.Is(err, purge.ErrInvalid) {
			t.Errorf("Purge(%q, %q) = %v, want purge.ErrInvalid", tc.d, tc.ref, err)
		}
	}
	if len(fake.bodies)+len(fake.problems) != n {
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
