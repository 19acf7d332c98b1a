package cloudcdn

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"

	"github.com/custody-dev/custody/services/cdn-broker/internal/purge"
)

// fakeCompute is a loopback Compute Engine endpoint for
// urlMaps.invalidateCache: it checks the path, the bearer token, the
// request ID and the JSON rule, and answers with an Operation.
type fakeCompute struct {
	mu    sync.Mutex
	rules []map[string]any
	ids   []string
}

const testDigest = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func (f *fakeCompute) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	fail := func(code int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, `{"error": {"code": `+strconv.Itoa(code)+`, "message": "`+msg+`"}}`)
	}
	if r.Header.Get("Authorization") != "Bearer ya29.custody-test" {
		fail(http.StatusUnauthorized, "Request had invalid authentication credentials.")
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/compute/v1/projects/custody-prod/global/urlMaps/custody-cdn/invalidateCache" {
		fail(http.StatusNotFound, "no such method "+r.Method+" "+r.URL.Path)
		return
	}
	id := r.URL.Query().Get("requestId")
	var rule map[string]any
	if !uuidRE.MatchString(id) || json.Unmarshal(body, &rule) != nil {
		fail(http.StatusBadRequest, "bad request ID or body")
		return
	}
	f.mu.Lock()
	f.rules, f.ids = append(f.rules, rule), append(f.ids, id)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"kind": "compute#operation", "name": "operation-1733140800000-abc", "operationType": "invalidateCache", "status": "DONE"}`)
}

func TestCloudCDNPurge(t *testing.T) {
	fake := &fakeCompute{}
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
		t.Fatal(err)
	}
	if op != "operation-1733140800000-abc" || len(fake.rules) != 1 {
		t.Fatalf("op %q, %d requests", op, len(fake.rules))
	}
	if fake.rules[0]["path"] != "/v1/blobs/sha256/"+strings.TrimPrefix(testDigest, "sha256:") || fake.rules[0]["host"] != "cdn.example.com" {
		t.Errorf("rule %v", fake.rules[0])
	}
	// The same reference gives the same request ID (retries are
	// deduplicated by Compute Engine); another reference another one.
	p.Purge(t.Context(), testDigest, "rev-1")
	p.Purge(t.Context(), testDigest, "rev-2")
	if len(fake.ids) != 3 || fake.ids[0] != fake.ids[1] || fake.ids[1] == fake.ids[2] {
		t.Errorf("request IDs %v", fake.ids)
	}
	if _, err := newPurger("ya29.stolen").Purge(t.Context(), testDigest, "rev-3"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("bad token: %v", err)
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
