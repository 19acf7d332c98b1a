package akamai

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/custody-dev/custody/services/cdn-broker/internal/purge"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purge/purgetest"
)

const (
	testDigest   = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	clientToken  = "akab-client-token-xxx"
	accessToken  = "akab-access-token-xxx"
	clientSecret = "SOMESECRETSOMESECRETSOMESECRET="
)

func TestAkamaiPurge(t *testing.T) {
	fake := &purgetest.FastPurge{ClientToken: clientToken, ClientSecret: clientSecret, AccessToken: accessToken, Network: "production"}
	srv := httptest.NewTLSServer(fake)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	newPurger := func(secret string) *Purger {
		p, err := New(Config{Host: host, ClientToken: clientToken, ClientSecret: secret, AccessToken: accessToken,
			BaseURL: "https://dl.akamaized.example/", HTTPClient: srv.Client()})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	id, err := newPurger(clientSecret).Purge(t.Context(), testDigest, "rev-1")
	if err != nil {
		t.Fatalf("purge: %v (server saw %v)", err, fake.Problems())
	}
	objs := fake.Objects()
	if id != "edcp-custody-1" || len(objs) != 1 ||
		len(objs[0]) != 1 || objs[0][0] != "https://dl.akamaized.example/v1/blobs/sha256/"+strings.TrimPrefix(testDigest, "sha256:") {
		t.Fatalf("id %q, objects %v", id, objs)
	}
	_, err = newPurger("wrong-secret").Purge(t.Context(), testDigest, "rev-2")
	if err == nil || !strings.Contains(err.Error(), "HTTP 401") || strings.Contains(err.Error(), "wrong-secret") || len(fake.Problems()) != 1 {
		t.Errorf("wrong secret: %v (refusals %v)", err, fake.Problems())
	}
	if _, err := newPurger(clientSecret).Purge(t.Context(), "sha256:x", "rev-3"); !errors.Is(err, purge.ErrInvalid) {
		t.Errorf("bad digest: %v", err)
	}
	for _, c := range []Config{
		{Host: "h/x", ClientToken: "a", ClientSecret: "b", AccessToken: "c", BaseURL: "https://x"},
		{Host: "h", ClientToken: "a", AccessToken: "c", BaseURL: "https://x"},
		{Host: "h", ClientToken: "a", ClientSecret: "b", AccessToken: "c", BaseURL: "http://x"},
		{Host: "h", ClientToken: "a", ClientSecret: "b", AccessToken: "c", BaseURL: "https://x", Network: "all"},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c.Host)
		}
	}
}
