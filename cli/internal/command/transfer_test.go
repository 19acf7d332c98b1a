package command

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	libdigest "github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/verify"
)

// These tests run `custody fetch`'s transfer against real HTTPS servers on
// loopback that misbehave the way an edge process cannot be made to on
// demand: they cut the connection mid-body, stall, answer 5xx, serve other
// bytes, trickle, or redirect to plain HTTP. cli/e2e TestFetchFailover
// runs the dev stack's two real edges and kills one.

const blobSize = 1 << 20

type blob struct {
	data []byte
	a    verify.Artifact
}

func newBlob(t *testing.T) blob {
	b := make([]byte, blobSize)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return blob{data: b, a: verify.Artifact{Name: "app", Version: "1", Digest: libdigest.FromSum(sum[:]), Size: int64(len(b))}}
}

// edge is one loopback HTTPS server with a behaviour and a request log.
type edge struct {
	srv    *httptest.Server
	hits   atomic.Int32
	ranges atomic.Value // last Range header
}

func (e *edge) url(b blob) string {
	hex, _ := libdigest.Parse(b.a.Digest)
	return e.srv.URL + "/v1/blobs/sha256/" + hex + "?token=secret-token"
}

func newEdge(t *testing.T, tls bool, h func(e *edge, w http.ResponseWriter, r *http.Request)) *edge {
	e := &edge{}
	e.ranges.Store("")
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		e.ranges.Store(r.Header.Get("Range"))
		h(e, w, r)
	})
	if tls {
		e.srv = httptest.NewTLSServer(handler)
	} else {
		e.srv = httptest.NewServer(handler)
	}
	t.Cleanup(e.srv.Close)
	return e
}

// serve answers like the real edge: http.ServeContent with the digest as
// a strong ETag, so Range and If-Range work.
func serve(b blob) func(*edge, http.ResponseWriter, *http.Request) {
	return func(_ *edge, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"`+b.a.Digest+`"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b.data))
	}
}

// killed announces the whole body, sends part of it and drops the TCP
// connection, as an edge process killed mid-transfer does.
func killed(b blob, after int) func(*edge, http.ResponseWriter, *http.Request) {
	return func(_ *edge, w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: \"%s\"\r\n\r\n", len(b.data), b.a.Digest)
		buf.Write(b.data[:after])
		buf.Flush()
		conn.Close()
	}
}

// stall sends part of the body and then nothing until the client leaves.
func stall(b blob, after int) func(*edge, http.ResponseWriter, *http.Request) {
	return func(_ *edge, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(b.data)))
		w.WriteHeader(http.StatusOK)
		w.Write(b.data[:after])
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	}
}

// slow trickles 16 KiB every 20 ms: about 0.8 MB/s, alive but slow.
func slow(b blob) func(*edge, http.ResponseWriter, *http.Request) {
	return func(_ *edge, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(b.data)))
		w.WriteHeader(http.StatusOK)
		for off := 0; off < len(b.data); off += 16 << 10 {
			if _, err := w.Write(b.data[off:min(off+16<<10, len(b.data))]); err != nil {
				return
			}
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

func unavailable(_ *edge, w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "origin unavailable: try another edge", http.StatusServiceUnavailable)
}

// other serves other bytes of the same size under the artifact's ETag,
// honouring Range like an edge.
func other(b blob) func(*edge, http.ResponseWriter, *http.Request) {
	evil := bytes.Repeat([]byte("x"), len(b.data))
	return func(_ *edge, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"`+b.a.Digest+`"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(evil))
	}
}

func testCLI() (*cli, *bytes.Buffer) {
	var stderr bytes.Buffer
	return &cli{stdout: &bytes.Buffer{}, stderr: &stderr}, &stderr
}

var quick = fetchOptions{Rounds: 2, Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Stall: 500 * time.Millisecond, EdgeTimeout: 5 * time.Second}

// edgeClient trusts the httptest servers' certificate (all share one).
func edgeClient(e *edge) *http.Client {
	return newFetchClient(e.srv.Client().Transport)
}

func run(t *testing.T, ctx context.Context, b blob, o fetchOptions, edges ...*edge) (string, *transferResult, error) {
	t.Helper()
	var tlsEdge *edge
	var urls []string
	for _, e := range edges {
		urls = append(urls, e.url(b))
		if strings.HasPrefix(e.srv.URL, "https://") && tlsEdge == nil {
			tlsEdge = e
		}
	}
	out := filepath.Join(t.TempDir(), "out")
	c, _ := testCLI()
	res, err := c.transfer(ctx, edgeClient(tlsEdge), urls, b.a, out, o)
	return out, res, err
}

func wantBytes(t *testing.T, out string, b blob) {
	t.Helper()
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, b.data) {
		t.Fatalf("output differs from the artifact (%d bytes)", len(got))
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*part*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func wantNoOutput(t *testing.T, out string) {
	t.Helper()
	if _, err := os.Stat(out); err == nil {
		t.Error("output written after a failed fetch")
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*part*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// wantNamed checks that err names every edge and its answer.
func wantNamed(t *testing.T, err error, edges []*edge, answers ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("fetch succeeded")
	}
	for _, e := range edges {
		if !strings.Contains(err.Error(), e.srv.URL) {
			t.Errorf("error does not name edge %s: %v", e.srv.URL, err)
		}
	}
	for _, a := range answers {
		if !strings.Contains(err.Error(), a) {
			t.Errorf("error does not say %q: %v", a, err)
		}
	}
	if strings.Contains(err.Error(), "secret-token") {
		t.Errorf("error shows the token: %v", err)
	}
}

func TestTransferKilledMidTransferResumesOnNextEdge(t *testing.T) {
	b := newBlob(t)
	dead := newEdge(t, true, killed(b, 300<<10))
	good := newEdge(t, true, serve(b))
	out, res, err := run(t, t.Context(), b, quick, dead, good)
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, out, b)
	if !res.Resumed || good.ranges.Load() != fmt.Sprintf("bytes=%d-", 300<<10) {
		t.Errorf("not resumed with a Range request: resumed=%v range=%q attempts=%+v", res.Resumed, good.ranges.Load(), res.Attempts)
	}
	if len(res.Attempts) != 2 || res.Attempts[1].Bytes != blobSize-300<<10 {
		t.Errorf("attempts: %+v", res.Attempts)
	}

	// With progress on, the terminal shows the byte count and the edge
	// that failed, never the token.
	c, stderr := testCLI()
	c.progress = true
	out = filepath.Join(t.TempDir(), "out")
	if _, err := c.transfer(t.Context(), edgeClient(dead), []string{dead.url(b), good.url(b)}, b.a, out, quick); err != nil {
		t.Fatal(err)
	}
	wantBytes(t, out, b)
	if s := stderr.String(); !strings.Contains(s, fmt.Sprintf("downloaded %d/%d bytes (100%%)", blobSize, blobSize)) ||
		!strings.Contains(s, dead.srv.URL) || strings.Contains(s, "secret-token") {
		t.Errorf("progress output:\n%s", s)
	}
}

func TestFetchReportFieldNames(t *testing.T) {
	b, err := json.Marshal(fetchReport{Bundle: "b", Error: "e", Deployment: &deployment{}, transferResult: &transferResult{Attempts: []edgeAttempt{{Status: 200}}}})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(maps.Keys(m))
	if want := "attempts bundle deployment digest environment error ok output ref resumed served_by size"; strings.Join(got, " ") != want {
		t.Errorf("fields %v, want %s (docs/cli-json.md)", got, want)
	}
	var a []map[string]any
	json.Unmarshal(m["attempts"], &a)
	if got := slices.Sorted(maps.Keys(a[0])); strings.Join(got, " ") != "answer bytes edge offset status" {
		t.Errorf("attempt fields %v", got)
	}
}

func TestTransferStalledEdgeGivesWay(t *testing.T) {
	b := newBlob(t)
	stuck := newEdge(t, true, stall(b, 100<<10))
	good := newEdge(t, true, serve(b))
	o := quick
	o.Stall = 300 * time.Millisecond
	start := time.Now()
	out, res, err := run(t, t.Context(), b, o, stuck, good)
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, out, b)
	if !res.Resumed || !strings.Contains(res.Attempts[0].Answer, "stalled") {
		t.Errorf("attempts: %+v", res.Attempts)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s: the stall was not cut at %s", d, o.Stall)
	}
}

func TestTransfer5xxFailsOverAndRetries(t *testing.T) {
	b := newBlob(t)
	down := newEdge(t, true, unavailable)
	good := newEdge(t, true, serve(b))
	out, _, err := run(t, t.Context(), b, quick, down, good)
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, out, b)

	// Every edge down: each round tries each edge, and the error names both.
	down2 := newEdge(t, true, unavailable)
	out, res, err := run(t, t.Context(), b, quick, down, down2)
	wantNamed(t, err, []*edge{down, down2}, "503 Service Unavailable", "origin unavailable")
	wantNoOutput(t, out)
	if len(res.Attempts) != 2*quick.Rounds {
		t.Errorf("%d attempts, want %d (every edge every round)", len(res.Attempts), 2*quick.Rounds)
	}

	// An edge that recovers between rounds is used on the next round.
	var n atomic.Int32
	flaky := newEdge(t, true, func(e *edge, w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 1 {
			unavailable(e, w, r)
			return
		}
		serve(b)(e, w, r)
	})
	out, _, err = run(t, t.Context(), b, quick, flaky)
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, out, b)
}

func TestTransferOtherBytesAreRefused(t *testing.T) {
	b := newBlob(t)
	liar := newEdge(t, true, other(b))
	good := newEdge(t, true, serve(b))
	out, res, err := run(t, t.Context(), b, quick, liar, good)
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, out, b)
	if !strings.Contains(res.Attempts[0].Answer, "integrity failure") {
		t.Errorf("attempts: %+v", res.Attempts)
	}
	// A liar is not asked again.
	out, res, err = run(t, t.Context(), b, quick, liar)
	wantNamed(t, err, []*edge{liar}, "integrity failure", b.a.Digest)
	wantNoOutput(t, out)
	if len(res.Attempts) != 1 {
		t.Errorf("the lying edge was asked %d times", len(res.Attempts))
	}

	// Cut mid-transfer, then an edge that answers the Range with other
	// bytes: the mixed file fails, and the fetch starts again from zero.
	dead := newEdge(t, true, killed(b, 200<<10))
	out, _, err = run(t, t.Context(), b, quick, dead, liar, good)
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, out, b)

	// An edge that serves one byte too many.
	long := newEdge(t, true, func(_ *edge, w http.ResponseWriter, r *http.Request) {
		w.Write(append(append([]byte{}, b.data...), 'x'))
	})
	out, _, err = run(t, t.Context(), b, quick, long)
	wantNamed(t, err, []*edge{long}, "integrity failure")
	wantNoOutput(t, out)
}

func TestTransferSlowEdgePastTheDeadline(t *testing.T) {
	b := newBlob(t)
	tortoise := newEdge(t, true, slow(b))
	good := newEdge(t, true, serve(b))
	o := quick
	o.EdgeTimeout = 300 * time.Millisecond
	out, res, err := run(t, t.Context(), b, o, tortoise, good)
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, out, b)
	if !res.Resumed || !strings.Contains(res.Attempts[0].Answer, "too slow") {
		t.Errorf("attempts: %+v", res.Attempts)
	}

	// Only slow edges and a whole-fetch deadline: a clear error naming them.
	tortoise2 := newEdge(t, true, slow(b))
	ctx, cancel := context.WithTimeout(t.Context(), 700*time.Millisecond)
	defer cancel()
	o.EdgeTimeout = 5 * time.Second
	out, _, err = run(t, ctx, b, o, tortoise, tortoise2)
	wantNamed(t, err, []*edge{tortoise}, "deadline")
	wantNoOutput(t, out)
}

func TestTransferNeverGoesToPlainHTTP(t *testing.T) {
	b := newBlob(t)
	plain := newEdge(t, false, serve(b))
	redirector := newEdge(t, true, func(_ *edge, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.srv.URL+r.URL.RequestURI(), http.StatusFound)
	})
	good := newEdge(t, true, serve(b))
	out, res, err := run(t, t.Context(), b, quick, redirector, good)
	if err != nil {
		t.Fatal(err)
	}
	wantBytes(t, out, b)
	if !strings.Contains(res.Attempts[0].Answer, "refused a redirect") {
		t.Errorf("attempts: %+v", res.Attempts)
	}
	// Only the redirector, and an http:// URL from the broker.
	out, _, err = run(t, t.Context(), b, quick, redirector, plain)
	wantNamed(t, err, []*edge{redirector, plain}, "refused a redirect", "not an https:// URL")
	wantNoOutput(t, out)
	if n := plain.hits.Load(); n != 0 {
		t.Fatalf("the plain HTTP server got %d requests: the token went out in clear", n)
	}
	// A redirect to another host over HTTPS is refused too.
	elsewhere := newEdge(t, true, func(_ *edge, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, strings.Replace(good.srv.URL, "127.0.0.1", "localhost", 1)+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	})
	out, _, err = run(t, t.Context(), b, quick, elsewhere)
	wantNamed(t, err, []*edge{elsewhere}, "refused a redirect")
	wantNoOutput(t, out)
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 10-99/100", 10, 100, true},
		{"bytes 0-0/1", 0, 1, true},
		{"bytes 10-98/100", 0, 0, false}, // not to the end
		{"bytes 10-99/*", 0, 0, false},
		{"bytes */100", 0, 0, false},
		{"bytes -1-99/100", 0, 0, false},
		{"bytes 10-9/100", 0, 0, false},
		{"items 10-99/100", 0, 0, false},
		{"", 0, 0, false},
	} {
		s, tot, ok := parseContentRange(tc.in)
		if ok != tc.ok || s != tc.start || tot != tc.total {
			t.Errorf("%q: got %d %d %v", tc.in, s, tot, ok)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	f.Add("bytes 10-99/100")
	f.Add("bytes 0-0/1")
	f.Add("bytes 9223372036854775806-9223372036854775806/9223372036854775807")
	f.Fuzz(func(t *testing.T, s string) {
		start, total, ok := parseContentRange(s)
		if ok && (start < 0 || start >= total) {
			t.Fatalf("%q: start %d total %d", s, start, total)
		}
	})
}
