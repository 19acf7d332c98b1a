package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"

	"github.com/custody-dev/custody/libs/stopstate"
)

// accessLines are the handler's access lines so far, decoded.
func (f *fixture) accessLines(t *testing.T) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(f.logs.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == "access" {
			lines = append(lines, m)
		}
	}
	return lines
}

// TestAccessLogNamesEachRequest (issue 8): a 200, a 403 and a ranged 206
// each get one access line with the digest, the decision id (none for a
// token that does not verify), the status, the 403's reason, the bytes the
// client received, a duration and the client: the socket peer when it is
// not a trusted proxy, whatever X-Forwarded-For says; behind a trusted
// proxy the client the proxy names, with the proxy as peer; the request
// spans agree (client.address, network.peer.address). No line holds a
// token or a query.
func TestAccessLogNamesEachRequest(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct {
		name    string
		proxies []netip.Prefix
		xff     string
		client  string
		peer    bool // the socket peer is logged too
	}{
		{name: "direct", client: "127.0.0.1"},
		{name: "an untrusted peer's X-Forwarded-For is not believed", xff: "203.0.113.9", client: "127.0.0.1"},
		{name: "behind a trusted proxy", proxies: trusted, xff: "203.0.113.9", client: "203.0.113.9", peer: true},
		{name: "through two trusted proxies", proxies: trusted, xff: "198.51.100.7, 203.0.113.9, 10.1.2.3", client: "203.0.113.9", peer: true},
		{name: "a trusted proxy that names no client", proxies: trusted, client: "", peer: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t)
			f.handler.TrustedProxies = tc.proxies
			f.stops.set(stopstate.State{}, false)
			good, expired := f.token(t, f.key, f.digest, time.Minute), f.token(t, f.key, f.digest, -time.Minute)
			path := "/v1/blobs/sha256/" + strings.TrimPrefix(f.digest, "sha256:")
			for i, rq := range []struct {
				name, tok, rng   string
				status           int
				refused, decided string
				body             []byte // nil: an error message
			}{
				{name: "200", tok: good, status: http.StatusOK, decided: "d1", body: f.content},
				{name: "403", tok: expired, status: http.StatusForbidden, refused: "expired"},
				{name: "206", tok: good, rng: "bytes=1000-4999", status: http.StatusPartialContent, decided: "d1", body: f.content[1000:5000]},
			} {
				req, _ := http.NewRequest(http.MethodGet, f.blobURL(f.digest, rq.tok), nil)
				if tc.xff != "" {
					req.Header.Set("X-Forwarded-For", tc.xff)
				}
				if rq.rng != "" {
					req.Header.Set("Range", rq.rng)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != rq.status || rq.body != nil && string(got) != string(rq.body) {
					t.Fatalf("%s: GET = %d, %d bytes, %v", rq.name, resp.StatusCode, len(got), err)
				}
				// The line is written after the answer.
				var lines []map[string]any
				for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
					if lines = f.accessLines(t); len(lines) > i || time.Now().After(deadline) {
						break
					}
				}
				if len(lines) != i+1 {
					t.Fatalf("%s: %d access lines, want %d:\n%s", rq.name, len(lines), i+1, f.logs.String())
				}
				line := lines[i]
				if d, ok := line["duration"].(float64); !ok || d <= 0 {
					t.Errorf("%s: duration %v, want more than 0", rq.name, line["duration"])
				}
				want := map[string]any{
					"method": "GET", "path": path, "digest": f.digest, "decision_id": rq.decided,
					"status": float64(rq.status), "refused": rq.refused, "bytes": float64(len(got)), "client": tc.client,
				}
				if tc.peer {
					peer, _ := line["peer"].(string)
					if !strings.HasPrefix(peer, "127.0.0.1:") {
						t.Errorf("%s: peer %q, want the proxy's socket address 127.0.0.1:port", rq.name, peer)
					}
					want["peer"] = peer
				}
				for _, k := range []string{"time", "level", "msg", "duration"} {
					delete(line, k)
				}
				if diff := cmp.Diff(want, line); diff != "" {
					t.Errorf("%s: access line (-want +got):\n%s", rq.name, diff)
				}
			}
			// The request spans say the same of the client.
			var spans int
			for _, sp := range f.spans.Ended() {
				if sp.SpanKind() != trace.SpanKindServer || !strings.HasPrefix(sp.Name(), "GET /v1/blobs/") {
					continue
				}
				spans++
				a := map[string]string{}
				for _, kv := range sp.Attributes() {
					a[string(kv.Key)] = kv.Value.Emit()
				}
				if a["client.address"] != tc.client || a["network.peer.address"] != "127.0.0.1" || (a["client.port"] != "") == tc.peer {
					t.Errorf("span client.address %q, client.port %q, network.peer.address %q: want client %q, peer 127.0.0.1",
						a["client.address"], a["client.port"], a["network.peer.address"], tc.client)
				}
			}
			if spans != 3 {
				t.Errorf("%d request spans, want 3", spans)
			}
			logs := f.logs.String()
			for _, secret := range []string{good, expired, "token=", "?"} {
				if strings.Contains(logs, secret) {
					t.Errorf("the log holds %q:\n%s", secret, logs)
				}
			}
		})
	}
}
