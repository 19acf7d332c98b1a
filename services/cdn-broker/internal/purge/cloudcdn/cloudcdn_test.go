package cloudcdn

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/custody-dev/custody/services/cdn-broker/internal/purge"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purge/purgetest"
)

const testDigest = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func TestCloudCDNPurge(t *testing.T) {
	fake := &purgetest.Compute{Project: "custody-prod", URLMap: "custody-cdn", Token: "ya29.custody-test"}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	newPurger := func(token string) *Purger {
		p, err := New(t.Context(), Config{Project: "custody-prod", URLMap: "custody-cdn", Host: "cdn.example.com",
			Tokens: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token, TokenType: "Bearer"}), Endpoint: srv.URL + "/compute/v1/"})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := newPurger("ya29.custody-test")
	op, err := p.Purge(t.Context(), testDigest, "rev-1")
	if err != nil {
		t.Fatalf("purge: %v (server saw %v)", err, fake.Problems())
	}
	rules := fake.Rules()
	if op != "operation-1-invalidate" || len(rules) != 1 {
		t.Fatalf("op %q, %d requests", op, len(rules))
	}
	if rules[0].Path != "/v1/blobs/sha256/"+strings.TrimPrefix(testDigest, "sha256:") || rules[0].Host != "cdn.example.com" {
		t.Errorf("rule %+v", rules[0])
	}
	// The same reference gives the same request ID (retries are
	// deduplicated by Compute Engine); another reference another one.
	p.Purge(t.Context(), testDigest, "rev-1")
	p.Purge(t.Context(), testDigest, "rev-2")
	rules = fake.Rules()
	if len(rules) != 3 || rules[0].RequestID != rules[1].RequestID || rules[1].RequestID == rules[2].RequestID {
		t.Errorf("rules %+v", rules)
	}
	if _, err := newPurger("ya29.stolen").Purge(t.Context(), testDigest, "rev-3"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("bad token: %v", err)
	}
	// Through a caller's HTTP client, the bearer token still goes along.
	hp, err := New(t.Context(), Config{Project: "custody-prod", URLMap: "custody-cdn", Host: "cdn.example.com", HTTPClient: &http.Client{Timeout: 5 * time.Second},
		Tokens: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "ya29.custody-test", TokenType: "Bearer"}), Endpoint: srv.URL + "/compute/v1/"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hp.Purge(t.Context(), testDigest, "rev-5"); err != nil || len(fake.Rules()) != 4 {
		t.Errorf("purge through an HTTP client: %v (refused %v)", err, fake.Problems())
	}
	if _, err := p.Purge(t.Context(), "sha256:nothex", "rev-4"); !errors.Is(err, purge.ErrInvalid) {
		t.Errorf("bad digest: %v", err)
	}
	for _, c := range []Config{{Project: "Bad_Project", URLMap: "m", Tokens: oauth2.StaticTokenSource(&oauth2.Token{})}, {Project: "p", URLMap: "m"}} {
		if _, err := New(t.Context(), c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}
