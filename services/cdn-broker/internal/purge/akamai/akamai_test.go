package akamai

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/custody-dev/custody/services/cdn-broker/internal/purge"
)

const (
	testDigest   = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	clientToken  = "akab-client-token-xxx"
	accessToken  = "akab-access-token-xxx"
	clientSecret = "SOMESECRETSOMESECRETSOMESECRET="
)

func mac(key, msg string) string {
	h := hmac.New(sha256.New, []byte(key))
	h.Write([]byte(msg))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// fakeFastPurge is a loopback Fast Purge v3 endpoint that verifies the
// EdgeGrid (EG1-HMAC-SHA256) signature independently of the client library,
// per Akamai's "Authenticate with EdgeGrid" specification.
type fakeFastPurge struct {
	mu      sync.Mutex
	objects [][]string
	denied  int
}

func (f *fakeFastPurge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	deny := func() {
		f.mu.Lock()
		f.denied++
		f.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"type": "https://problems.luna.akamaiapis.net/-/pep-authn/deny", "title": "Not authorized", "status": 401}`)
	}
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "EG1-HMAC-SHA256 ")
	i := strings.LastIndex(rest, "signature=")
	if !ok || i < 0 {
		deny()
		return
	}
	fields := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(rest[:i], ";"), ";") {
		k, v, _ := strings.Cut(kv, "=")
		fields[k] = v
	}
	if fields["client_token"] != clientToken || fields["access_token"] != accessToken || fields["nonce"] == "" || fields["timestamp"] == "" {
		deny()
		return
	}
	sum := sha256.Sum256(body)
	data := strings.Join([]string{r.Method, "https", r.Host, r.URL.RequestURI(), "", base64.StdEncoding.EncodeToString(sum[:]), "EG1-HMAC-SHA256 " + rest[:i]}, "\t")
	if rest[i+len("signature="):] != mac(mac(clientSecret, fields["timestamp"]), data) {
		deny()
		return
	}
	var req struct {
		Objects []string `json:"objects"`
	}
	if r.Method != http.MethodPost || r.URL.Path != "/ccu/v3/invalidate/url/production" || json.Unmarshal(body, &req) != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.objects = append(f.objects, req.Objects)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, `{"httpStatus": 201, "detail": "Request accepted", "estimatedSeconds": 5, "purgeId": "edcp-Fz7zjfYW7aPDhMcHUKGXL7", "supportId": "17PY1321286429616716-211907680"}`)
}

func TestAkamaiPurge(t *testing.T) {
	fake := &fakeFastPurge{}
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
		t.Fatal(err)
	}
	if id != "edcp-Fz7zjfYW7aPDhMcHUKGXL7" || len(fake.objects) != 1 ||
		len(fake.objects[0]) != 1 || fake.objects[0][0] != "https://dl.akamaized.example/v1/blobs/sha256/"+strings.TrimPrefix(testDigest, "sha256:") {
		t.Fatalf("id %q, objects %v", id, fake.objects)
	}
	_, err = newPurger("wrong-secret").Purge(t.Context(), testDigest, "rev-2")
	if err == nil || !strings.Contains(err.Error(), "HTTP 401") || strings.Contains(err.Error(), "wrong-secret") || fake.denied != 1 {
		t.Errorf("wrong secret: %v (denied %d)", err, fake.denied)
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
