package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	edgev1 "github.com/custody-dev/custody/libs/gen/custody/edge/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/stopstate"
	"github.com/custody-dev/custody/libs/syncbuf"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/token"
	"github.com/custody-dev/custody/services/edge/internal/cache"
	"github.com/custody-dev/custody/services/edge/internal/server"
)

// fakePublisher serves blobs from memory. corrupt makes it send other
// bytes than the digest names; dataLoss makes it end the stream as the
// real publisher does when its stored copy is corrupted.
type fakePublisher struct {
	publisherv1.UnimplementedPublisherServiceServer
	mu       sync.Mutex
	blobs    map[string][]byte
	corrupt  bool
	dataLoss bool
	down     bool
	// stall makes Download send nothing until the caller gives up.
	stall   bool
	fetches atomic.Int64
}

func (p *fakePublisher) Download(req *publisherv1.DownloadRequest, stream publisherv1.PublisherService_DownloadServer) error {
	p.fetches.Add(1)
	p.mu.Lock()
	b, ok := p.blobs[req.GetDigest()]
	corrupt, dataLoss, down, stall := p.corrupt, p.dataLoss, p.down, p.stall
	p.mu.Unlock()
	if stall {
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	switch {
	case down:
		return status.Error(codes.Unavailable, "store offline")
	case !ok:
		return status.Error(codes.NotFound, "no such blob")
	}
	if corrupt {
		b = append(bytes.Clone(b[:len(b)-1]), b[len(b)-1]^1)
	}
	for i := 0; i < len(b); i += 1 << 16 {
		if err := stream.Send(&publisherv1.DownloadResponse{Chunk: b[i:min(i+1<<16, len(b))], Size: int64(len(b))}); err != nil {
			return err
		}
	}
	if dataLoss {
		return status.Error(codes.DataLoss, "stored blob "+req.GetDigest()+" does not match its digest")
	}
	return nil
}

func (p *fakePublisher) set(f func(*fakePublisher)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

type fixture struct {
	td      *identitytest.TrustDomain
	pub     *fakePublisher
	cache   *cache.Cache
	dir     string
	url     string
	key     ed25519.PrivateKey
	now     time.Time
	tel     *telemetry.Telemetry
	content []byte
	digest  string
	stops   *fakeStops
	http    *server.HTTPMetrics
	logs    *syncBuffer
	// spans records the edge's and the publisher's spans.
	spans *tracetest.SpanRecorder
	// handler may be changed before the first request.
	handler *server.Handler
}

// syncBuffer is the output a test reads while it is written.
type syncBuffer = syncbuf.Buffer

// fakeStops holds a stop state as the watcher would; the check itself is
// the real one.
type fakeStops struct {
	mu      sync.Mutex
	state   stopstate.State
	unknown bool
}

func (s *fakeStops) set(st stopstate.State, unknown bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.unknown = st, unknown
}

func (s *fakeStops) Check(env, digest string, issued time.Time, precision time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unknown {
		return stopstate.ErrUnknown
	}
	return s.state.Check(env, digest, issued, precision)
}

func start(t *testing.T, opts ...func(*cache.Config)) *fixture {
	t.Helper()
	td := identitytest.New(t, "custody.test")
	content := make([]byte, 300<<10)
	rand.Read(content)
	sum := sha256.Sum256(content)
	f := &fixture{
		td: td, dir: t.TempDir(), now: time.Unix(1_800_000_000, 0), tel: telemetry.Discard("edge"),
		content: content, digest: "sha256:" + hex.EncodeToString(sum[:]),
	}
	f.spans = tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(f.spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	f.tel.TracerProvider = tp
	pubTel := telemetry.Discard("publisher")
	pubTel.TracerProvider = tp
	f.pub = &fakePublisher{blobs: map[string][]byte{f.digest: content}}
	pubSrv := rpc.NewServer(rpc.ServerConfig{Source: td.Source(t, "/service/publisher"), TrustDomain: td.TD,
		Policy: rpc.Policy{rpc.Method(publisherv1.PublisherService_ServiceDesc, "Download"): {rpc.ID(td.ID("/service/edge"))}},
		Logger: slog.New(slog.DiscardHandler), Telemetry: pubTel})
	publisherv1.RegisterPublisherServiceServer(pubSrv, f.pub)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go pubSrv.Serve(l)
	t.Cleanup(pubSrv.Stop)
	conn, err := rpc.Dial(l.Addr().String(), td.ID("/service/publisher"), td.Source(t, "/service/edge"), f.tel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	cfg := cache.Config{Dir: f.dir, Origin: server.Publisher{Client: publisherv1.NewPublisherServiceClient(conn)}}
	for _, o := range opts {
		o(&cfg)
	}
	f.cache, _, err = cache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.cache.OnIntegrityFailure = func(where string) { f.tel.Metrics.IntegrityFailures.WithLabelValues(where).Inc() }
	pubKey, key, _ := ed25519.GenerateKey(rand.Reader)
	f.key = key
	f.stops = &fakeStops{}
	f.http = server.NewHTTPMetrics(prometheus.NewRegistry())
	f.logs = &syncBuffer{}
	h := &server.Handler{Cache: f.cache, Keys: server.StaticKeys{token.KeyID(pubKey): pubKey}, Stops: f.stops, Limits: token.DefaultLimits,
		Logger: slog.New(slog.NewJSONHandler(f.logs, nil)), Metrics: f.tel.Metrics, HTTP: f.http, Telemetry: f.tel, Now: func() time.Time { return f.now }}
	f.handler = h
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	f.url = hs.URL
	return f
}

func (f *fixture) token(t *testing.T, key ed25519.PrivateKey, digest string, ttl time.Duration) string {
	t.Helper()
	tok, err := token.Mint(key, token.Claims{Digest: digest, DecisionID: "d1", Expires: f.now.Add(ttl), IssuedAt: f.now})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fixture) blobURL(digest, tok string) string {
	return f.url + "/v1/blobs/sha256/" + strings.TrimPrefix(digest, "sha256:") + "?token=" + tok
}

func get(t *testing.T, method, url string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func (f *fixture) cached() string {
	return filepath.Join(f.dir, "sha256-"+strings.TrimPrefix(f.digest, "sha256:"))
}

func TestServesVerifiedBytesForAValidToken(t *testing.T) {
	f := start(t)
	u := f.blobURL(f.digest, f.token(t, f.key, f.digest, time.Minute))
	code, body, hdr := get(t, http.MethodGet, u)
	if code != http.StatusOK || body != string(f.content) {
		t.Fatalf("GET = %d with %d bytes, want 200 with the blob", code, len(body))
	}
	if hdr.Get("ETag") != `"`+f.digest+`"` || !strings.Contains(hdr.Get("Cache-Control"), "immutable") {
		t.Fatalf("headers: %v", hdr)
	}
	code, body, _ = get(t, http.MethodHead, u)
	if code != http.StatusOK || body != "" {
		t.Fatalf("HEAD = %d %q", code, body)
	}
	// The second request is a cache hit.
	if code, _, _ = get(t, http.MethodGet, u); code != http.StatusOK || f.pub.fetches.Load() != 1 {
		t.Fatalf("second GET = %d after %d origin fetches, want 200 after 1", code, f.pub.fetches.Load())
	}
	// Ranges work (resumable downloads).
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Range", "bytes=10-19")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, f.content[10:20]) {
		t.Fatalf("range GET = %d %x", resp.StatusCode, b)
	}
	// The token may come in the Authorization header instead.
	req, _ = http.NewRequest(http.MethodGet, f.blobURL(f.digest, ""), nil)
	req.Header.Set("Authorization", "Bearer "+f.token(t, f.key, f.digest, time.Minute))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("bearer GET = %d", resp.StatusCode)
	}
}

func TestRefusesBadTokens(t *testing.T) {
	f := start(t)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	other := "sha256:" + strings.Repeat("ab", 32)
	good := f.token(t, f.key, f.digest, time.Minute)
	tampered := []byte(good)
	tampered[len(tampered)-3] ^= 'A' ^ 'B'
	for _, tc := range []struct {
		name, tok, want string
	}{
		{"missing", "", "malformed"},
		{"expired", f.token(t, f.key, f.digest, -time.Second), "expired"},
		{"other digest", f.token(t, f.key, other, time.Minute), "another digest"},
		{"unknown key", f.token(t, otherKey, f.digest, time.Minute), "unknown key"},
		{"tampered", string(tampered), ""},
		{"garbage", "v1.%%%.%%%", "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := get(t, http.MethodGet, f.blobURL(f.digest, tc.tok))
			if code != http.StatusForbidden || !strings.Contains(body, tc.want) {
				t.Fatalf("GET = %d %q, want 403 mentioning %q", code, body, tc.want)
			}
		})
	}
	if f.pub.fetches.Load() != 0 {
		t.Fatalf("refused requests reached the origin %d times", f.pub.fetches.Load())
	}
	if got := testutil.ToFloat64(f.tel.Metrics.SignatureFailures.WithLabelValues("token")); got != 6 {
		t.Fatalf("token failures counted %v, want 6", got)
	}
}

func TestRoutes(t *testing.T) {
	f := start(t)
	tok := f.token(t, f.key, f.digest, time.Minute)
	hexDigest := strings.TrimPrefix(f.digest, "sha256:")
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodPost, "/v1/blobs/sha256/" + hexDigest, http.StatusMethodNotAllowed},
		{http.MethodGet, "/v1/blobs/sha256/" + strings.ToUpper(hexDigest), http.StatusNotFound},
		{http.MethodGet, "/v1/blobs/sha256/" + hexDigest[:63], http.StatusNotFound},
		{http.MethodGet, "/v1/blobs/sha256/" + hexDigest[:63] + "g", http.StatusNotFound},
		{http.MethodGet, "/v1/blobs/sha512/" + hexDigest, http.StatusNotFound},
		{http.MethodGet, "/", http.StatusNotFound},
	} {
		if code, _, _ := get(t, tc.method, f.url+tc.path+"?token="+tok); code != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, code, tc.want)
		}
	}
}

func TestOriginCorruptionIsRefusedAndNotCached(t *testing.T) {
	for _, mode := range []string{"wrong bytes", "publisher reports data loss"} {
		t.Run(mode, func(t *testing.T) {
			f := start(t)
			f.pub.set(func(p *fakePublisher) { p.corrupt, p.dataLoss = mode == "wrong bytes", mode != "wrong bytes" })
			u := f.blobURL(f.digest, f.token(t, f.key, f.digest, time.Minute))
			// The blob streams while it fills: the first chunk may be out
			// before the digest fails; then the response is cut off, and
			// the last chunk never leaves (decision 0083).
			resp, err := http.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusBadGateway:
				if !strings.Contains(string(body), f.digest) {
					t.Fatalf("502 not naming the digest: %.200q", body)
				}
			case resp.StatusCode == http.StatusOK && err != nil:
				if len(body) > 256<<10 || !bytes.Equal(body, f.content[:len(body)]) {
					t.Fatalf("cut-off response released %d bytes, want at most the first chunk", len(body))
				}
			default:
				t.Fatalf("GET = %d with %d bytes, %v; want 502 or a cut-off response", resp.StatusCode, len(body), err)
			}
			if _, err := os.Stat(f.cached()); !os.IsNotExist(err) {
				t.Fatalf("corrupted bytes were cached: %v", err)
			}
			if left, _ := filepath.Glob(filepath.Join(f.dir, "tmp", "*")); len(left) != 0 {
				t.Fatalf("temporary files left: %v", left)
			}
			if got := testutil.ToFloat64(f.tel.Metrics.IntegrityFailures.WithLabelValues("origin")); got != 1 {
				t.Fatalf("origin integrity failures = %v, want 1", got)
			}
			// Once the origin is healthy again the blob is served.
			f.pub.set(func(p *fakePublisher) { p.corrupt, p.dataLoss = false, false })
			if code, body, _ := get(t, http.MethodGet, u); code != http.StatusOK || body != string(f.content) {
				t.Fatalf("after repair GET = %d", code)
			}
		})
	}
}

func TestOriginMissingOrDown(t *testing.T) {
	f := start(t)
	missing := "sha256:" + strings.Repeat("cd", 32)
	if code, body, _ := get(t, http.MethodGet, f.blobURL(missing, f.token(t, f.key, missing, time.Minute))); code != http.StatusNotFound || !strings.Contains(body, missing) {
		t.Fatalf("missing blob: %d %q, want 404 naming the digest", code, body)
	}
	f.pub.set(func(p *fakePublisher) { p.down = true })
	if code, body, _ := get(t, http.MethodGet, f.blobURL(f.digest, f.token(t, f.key, f.digest, time.Minute))); code != http.StatusServiceUnavailable || !strings.Contains(body, "another edge") {
		t.Fatalf("origin down: %d %q, want 503", code, body)
	}
}

// TestCorruptedCacheIsEvictedAndRefetched: a flipped byte in a cached
// chunk cuts the response short before any byte of that chunk, evicts the
// file and counts the failure; the next request fetches it again. A
// damaged header is refetched at once.
func TestCorruptedCacheIsEvictedAndRefetched(t *testing.T) {
	f := start(t)
	u := f.blobURL(f.digest, f.token(t, f.key, f.digest, time.Minute))
	if code, _, _ := get(t, http.MethodGet, u); code != http.StatusOK {
		t.Fatalf("first GET = %d", code)
	}
	flip := func(at int) {
		t.Helper()
		b, err := os.ReadFile(f.cached())
		if err != nil {
			t.Fatal(err)
		}
		b[at] ^= 0xff
		if err := os.WriteFile(f.cached(), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The second chunk (256 KiB on): the first comes out, then the cut.
	flip(98 + 256<<10 + 16 + 10)
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || resp.StatusCode != http.StatusOK || len(b) > 256<<10 || !bytes.Equal(b, f.content[:len(b)]) {
		t.Fatalf("GET of a corrupted cache file = %d, %d bytes, %v; want a cut after at most the first chunk", resp.StatusCode, len(b), err)
	}
	if _, err := os.Stat(f.cached()); !os.IsNotExist(err) {
		t.Fatalf("corrupted file not evicted: %v", err)
	}
	if got := testutil.ToFloat64(f.tel.Metrics.IntegrityFailures.WithLabelValues("edge-cache")); got != 1 {
		t.Fatalf("edge-cache integrity failures = %v, want 1", got)
	}
	if !strings.Contains(f.logs.String(), "integrity failure") {
		t.Fatal("no integrity failure logged")
	}
	if code, body, _ := get(t, http.MethodGet, u); code != http.StatusOK || body != string(f.content) || f.pub.fetches.Load() != 2 {
		t.Fatalf("GET after eviction = %d after %d origin fetches, want 200 with the true bytes after 2", code, f.pub.fetches.Load())
	}
	flip(40) // the header's salt
	if code, body, _ := get(t, http.MethodGet, u); code != http.StatusOK || body != string(f.content) || f.pub.fetches.Load() != 3 {
		t.Fatalf("GET after header damage = %d after %d origin fetches, want 200 after 3", code, f.pub.fetches.Load())
	}
	if got := testutil.ToFloat64(f.tel.Metrics.IntegrityFailures.WithLabelValues("edge-cache")); got != 2 {
		t.Fatalf("edge-cache integrity failures = %v, want 2", got)
	}
}

func TestConcurrentMissesFetchOnce(t *testing.T) {
	f := start(t)
	u := f.blobURL(f.digest, f.token(t, f.key, f.digest, time.Minute))
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for range 16 {
		wg.Go(func() {
			resp, err := http.Get(u)
			if err != nil {
				errs <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !bytes.Equal(b, f.content) {
				errs <- resp.Status
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := f.pub.fetches.Load(); n > 2 {
		t.Fatalf("16 concurrent misses fetched %d times", n)
	}
}

func TestStaleTemporaryFilesAreRemovedOnStart(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, "tmp", "fetch-123")
	if err := os.WriteFile(stale, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cache.New(cache.Config{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale temporary file survived: %v", err)
	}
}

func TestPurge(t *testing.T) {
	f := start(t)
	if code, _, _ := get(t, http.MethodGet, f.blobURL(f.digest, f.token(t, f.key, f.digest, time.Minute))); code != http.StatusOK {
		t.Fatalf("GET = %d", code)
	}
	srv := rpc.NewServer(rpc.ServerConfig{Source: f.td.Source(t, "/service/edge"), TrustDomain: f.td.TD, Policy: server.Policy(f.td.TD),
		Logger: slog.New(slog.DiscardHandler), Telemetry: f.tel})
	edgev1.RegisterEdgeServiceServer(srv, &server.Purger{Cache: f.cache, Logger: slog.New(slog.DiscardHandler)})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	client := func(as string) edgev1.EdgeServiceClient {
		conn, err := rpc.Dial(l.Addr().String(), f.td.ID("/service/edge"), f.td.Source(t, as), telemetry.Discard("test"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return edgev1.NewEdgeServiceClient(conn)
	}
	ctx := context.Background()
	if _, err := client("/deployer/alice").Purge(ctx, &edgev1.PurgeRequest{Digest: f.digest}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("deployer purge: %v, want PermissionDenied", err)
	}
	broker := client("/service/cdn-broker")
	for _, bad := range []string{"md5:abc", strings.ToUpper(f.digest), "sha256:" + strings.ToUpper(strings.TrimPrefix(f.digest, "sha256:"))} {
		// Upper-case hex was accepted before the one digest parser.
		if _, err := broker.Purge(ctx, &edgev1.PurgeRequest{Digest: bad}); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("bad digest %q: %v, want InvalidArgument", bad, err)
		}
	}
	resp, err := broker.Purge(ctx, &edgev1.PurgeRequest{Digest: f.digest})
	if err != nil || !resp.GetPurged() {
		t.Fatalf("broker purge: %v %v, want purged", resp, err)
	}
	if _, err := os.Stat(f.cached()); !os.IsNotExist(err) {
		t.Fatalf("purged blob still cached: %v", err)
	}
	resp, err = client("/admin/root").Purge(ctx, &edgev1.PurgeRequest{Digest: f.digest})
	if err != nil || resp.GetPurged() {
		t.Fatalf("second purge: %v %v, want not purged", resp, err)
	}
}

// TestRefusesTokensDuringStopsAndBeforeEpochs: every token is refused while
// the kill switch is on, a paused environment's tokens while it is paused,
// tokens whose decision or issue predates an epoch, tokens from the future
// or living too long, and everything (503) when the stop state is unknown.
func TestRefusesTokensDuringStopsAndBeforeEpochs(t *testing.T) {
	f := start(t)
	mint := func(c token.Claims) string {
		t.Helper()
		c.Digest = f.digest
		if c.Expires.IsZero() {
			c.Expires = f.now.Add(5 * time.Minute)
		}
		tok, err := token.Mint(f.key, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	fresh := token.Claims{Environment: "prod", IssuedAt: f.now, DecidedAt: f.now.Add(-time.Minute)}
	epoch := f.now.Add(-30 * time.Second) // after the decision, before the token
	tests := []struct {
		name    string
		claims  token.Claims
		state   stopstate.State
		unknown bool
		want    int
		msg     string
	}{
		{"no stop", fresh, stopstate.State{}, false, http.StatusOK, ""},
		{"kill switch on", fresh, stopstate.State{KillSwitch: stopstate.Stop{Active: true, Since: f.now.Add(-time.Hour)}}, false, http.StatusForbidden, "kill switch"},
		{"decision before the kill switch", fresh, stopstate.State{KillSwitch: stopstate.Stop{Epoch: 1, Since: epoch}}, false, http.StatusForbidden, "before the kill switch"},
		{"prod paused", fresh, stopstate.State{Pauses: map[string]stopstate.Stop{"prod": {Active: true, Since: f.now.Add(-time.Hour)}}}, false, http.StatusForbidden, "paused"},
		{"staging paused", fresh, stopstate.State{Pauses: map[string]stopstate.Stop{"staging": {Active: true, Since: f.now}}}, false, http.StatusOK, ""},
		{"decision before a revocation", fresh, stopstate.State{Revocation: epoch}, false, http.StatusForbidden, "key revocation"},
		{"token from before a revocation, no decision time", token.Claims{IssuedAt: f.now.Add(-time.Minute)}, stopstate.State{Revocation: epoch}, false, http.StatusForbidden, "key revocation"},
		{"state unknown", fresh, stopstate.State{}, true, http.StatusServiceUnavailable, "stop state unknown"},
		// An advisory import found the artifact affected in prod after the
		// decision (decision 0098); another digest's finding, or a finding
		// before the decision, does not refuse it.
		{"decision before a finding of its digest", fresh, stopstate.State{Findings: map[stopstate.Target]stopstate.Finding{{Digest: f.digest, Environment: "prod"}: {Since: epoch, Advisory: "GHSA-jf85-cpcp-j695"}}}, false, http.StatusForbidden, "GHSA-jf85-cpcp-j695"},
		{"decision after a finding of its digest", fresh, stopstate.State{Findings: map[stopstate.Target]stopstate.Finding{{Digest: f.digest, Environment: "prod"}: {Since: f.now.Add(-2 * time.Minute), Advisory: "GHSA-jf85-cpcp-j695"}}}, false, http.StatusOK, ""},
		{"finding of another digest", fresh, stopstate.State{Findings: map[stopstate.Target]stopstate.Finding{{Digest: "sha256:" + strings.Repeat("0", 64), Environment: "prod"}: {Since: epoch, Advisory: "GHSA-x"}}}, false, http.StatusOK, ""},
		{"finding of its digest in staging", fresh, stopstate.State{Findings: map[stopstate.Target]stopstate.Finding{{Digest: f.digest, Environment: "staging"}: {Since: epoch, Advisory: "GHSA-x"}}}, false, http.StatusOK, ""},
		{"decision before the findings overflow", fresh, stopstate.State{FindingsOverflow: epoch}, false, http.StatusForbidden, "findings overflowed"},
		// An artifact revocation (decision 0105): its digest is refused
		// whenever the token was issued; another digest's is not; anything
		// issued before the revocations' overflow is.
		{"token for a revoked digest", fresh, stopstate.State{Revoked: map[string]stopstate.Revocation{f.digest: {Since: f.now.Add(-time.Hour), Reason: "INC-7", By: "spiffe://custody.test/admin/ops", LogIndex: 9}}}, false, http.StatusForbidden, "was revoked at"},
		{"token for a revoked digest, issued before it", fresh, stopstate.State{Revoked: map[string]stopstate.Revocation{f.digest: {Since: f.now, Reason: "INC-7", LogIndex: 9}}}, false, http.StatusForbidden, "artifact.revoked log index 9"},
		{"another digest revoked", fresh, stopstate.State{Revoked: map[string]stopstate.Revocation{"sha256:" + strings.Repeat("0", 64): {Since: epoch, Reason: "x"}}}, false, http.StatusOK, ""},
		{"decision before the revocations overflow", fresh, stopstate.State{RevokedOverflow: epoch}, false, http.StatusForbidden, "revocations overflowed"},
		// The key-compromise drill admits again right after a revocation:
		// a decision 300 ms after it, in the same second, is after it.
		{"decision 300 ms after a revocation, same second", sameSecond(f.now, 700*time.Millisecond), stopstate.State{Revocation: f.now.Truncate(time.Second).Add(400 * time.Millisecond)}, false, http.StatusOK, ""},
		{"decision 300 ms before a revocation, same second", sameSecond(f.now, 100*time.Millisecond), stopstate.State{Revocation: f.now.Truncate(time.Second).Add(400 * time.Millisecond)}, false, http.StatusForbidden, "key revocation"},
		{"decision in the revocation's millisecond", sameSecond(f.now, 400*time.Millisecond), stopstate.State{Revocation: f.now.Truncate(time.Second).Add(400*time.Millisecond + 300*time.Microsecond)}, false, http.StatusForbidden, "key revocation"},
		{"token issued in a second before its decision's", token.Claims{Environment: "prod", IssuedAt: f.now.Add(-time.Minute), DecidedAt: f.now.Add(time.Second)}, stopstate.State{Revocation: f.now.Add(-30 * time.Second)}, false, http.StatusForbidden, "key revocation"},
		{"issued a year ahead", token.Claims{Environment: "prod", IssuedAt: f.now.Add(365 * 24 * time.Hour), Expires: f.now.Add(366 * 24 * time.Hour)}, stopstate.State{}, false, http.StatusForbidden, "future"},
		{"ten-year lifetime", token.Claims{Environment: "prod", IssuedAt: f.now, Expires: f.now.Add(10 * 365 * 24 * time.Hour)}, stopstate.State{}, false, http.StatusForbidden, "lifetime"},
	}
	for _, tt := range tests {
		f.stops.set(tt.state, tt.unknown)
		code, body, _ := get(t, http.MethodGet, f.blobURL(f.digest, mint(tt.claims)))
		if code != tt.want || !strings.Contains(body, tt.msg) {
			t.Errorf("%s: %d %q, want %d mentioning %q", tt.name, code, body, tt.want, tt.msg)
		}
	}
}

// sameSecond is a token decided at off into now's second and issued at
// the end of it.
func sameSecond(now time.Time, off time.Duration) token.Claims {
	sec := now.Truncate(time.Second)
	return token.Claims{Environment: "prod", IssuedAt: sec.Add(999 * time.Millisecond), DecidedAt: sec.Add(off)}
}

func TestPurgeAll(t *testing.T) {
	f := start(t)
	f.stops.set(stopstate.State{}, false)
	if code, _, _ := get(t, http.MethodGet, f.blobURL(f.digest, f.token(t, f.key, f.digest, time.Minute))); code != http.StatusOK {
		t.Fatalf("GET: %d", code)
	}
	n, err := f.cache.PurgeAll()
	if err != nil || n != 1 {
		t.Fatalf("PurgeAll = %d, %v, want 1 blob dropped", n, err)
	}
	if left, _ := filepath.Glob(filepath.Join(f.dir, "sha256-*")); len(left) != 0 {
		t.Fatalf("cache still holds %v", left)
	}
}

// TestHTTPMetricsAndAccessLog: requests by status, 403s by reason, bytes
// served and cache hits and misses are counted, and each request's access
// line names the digest and the decision.
func TestHTTPMetricsAndAccessLog(t *testing.T) {
	f := start(t)
	f.stops.set(stopstate.State{}, false)
	url := f.blobURL(f.digest, f.token(t, f.key, f.digest, time.Minute))
	for range 2 { // a miss, then a hit
		if code, body, _ := get(t, http.MethodGet, url); code != http.StatusOK || body != string(f.content) {
			t.Fatalf("GET: %d", code)
		}
	}
	if code, _, _ := get(t, http.MethodGet, f.blobURL(f.digest, f.token(t, f.key, f.digest, -time.Minute))); code != http.StatusForbidden {
		t.Fatalf("expired token: %d", code)
	}
	f.stops.set(stopstate.State{KillSwitch: stopstate.Stop{Active: true, Since: f.now.Add(-time.Hour)}}, false)
	if code, _, _ := get(t, http.MethodGet, url); code != http.StatusForbidden {
		t.Fatalf("kill switch: %d", code)
	}
	want := map[string]float64{
		"200": 2, "403": 2, "hit": 1, "miss": 1, "expired": 1, "stopped": 1, "bytes": float64(2 * len(f.content)),
	}
	got := func() map[string]float64 {
		return map[string]float64{
			"200": testutil.ToFloat64(f.http.Requests.WithLabelValues("200")), "403": testutil.ToFloat64(f.http.Requests.WithLabelValues("403")),
			"hit": testutil.ToFloat64(f.http.CacheLookups.WithLabelValues("hit")), "miss": testutil.ToFloat64(f.http.CacheLookups.WithLabelValues("miss")),
			"expired": testutil.ToFloat64(f.http.Forbidden.WithLabelValues("expired")), "stopped": testutil.ToFloat64(f.http.Forbidden.WithLabelValues("stopped")),
			"bytes": testutil.ToFloat64(f.http.BytesServed),
		}
	}
	// The handler counts after the answer is written.
	deadline := time.Now().Add(5 * time.Second)
	for !cmp.Equal(want, got()) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if diff := cmp.Diff(want, got()); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	logs := f.logs.String()
	for _, w := range []string{`"digest":"` + f.digest + `"`, `"decision_id":"d1"`, `"refused":"expired"`, `"refused":"stopped"`} {
		if !strings.Contains(logs, w) {
			t.Errorf("access log lacks %s:\n%s", w, logs)
		}
	}
	if strings.Contains(logs, "token=") || strings.Contains(logs, "v1.") {
		t.Errorf("access log shows a token:\n%s", logs)
	}
}

// TestRangeOnAMiss: a resume from another edge asks a range of a blob this
// edge has not cached: it is fetched and the range served while it fills.
func TestRangeOnAMiss(t *testing.T) {
	f := start(t)
	req, _ := http.NewRequest(http.MethodGet, f.blobURL(f.digest, f.token(t, f.key, f.digest, time.Minute)), nil)
	req.Header.Set("Range", "bytes=262140-")
	req.Header.Set("If-Range", `"`+f.digest+`"`)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, f.content[262140:]) {
		t.Fatalf("range on a miss = %d, %d bytes, %v", resp.StatusCode, len(b), err)
	}
	if want := fmt.Sprintf("bytes 262140-%d/%d", len(f.content)-1, len(f.content)); resp.Header.Get("Content-Range") != want {
		t.Fatalf("Content-Range %q, want %q", resp.Header.Get("Content-Range"), want)
	}
	if got := testutil.ToFloat64(f.http.CacheLookups.WithLabelValues("miss")); got != 1 {
		t.Fatalf("cache misses = %v, want 1", got)
	}
}

// Each request is a server span, a child of the caller's traceparent; the
// fill it starts calls the publisher within the same trace; and no span
// records the token, whether it came in the query or the header.
func TestRequestsAreTracedWithoutTheirTokens(t *testing.T) {
	f := start(t)
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	tok := f.token(t, f.key, f.digest, time.Minute)
	bearer := f.token(t, f.key, f.digest, 2*time.Minute)
	do := func(u, traceparent, auth string) int {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		if traceparent != "" {
			req.Header.Set("traceparent", traceparent)
		}
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := do(f.blobURL(f.digest, tok), "00-"+traceID+"-"+parentID+"-01", ""); code != http.StatusOK {
		t.Fatalf("traced miss: %d", code)
	}
	if code := do(f.blobURL(f.digest, ""), "00-"+traceID+"-"+parentID+"-01", bearer); code != http.StatusOK {
		t.Fatalf("traced hit with a bearer token: %d", code)
	}
	// A hostile traceparent starts a trace of the edge's own.
	if code := do(f.blobURL(f.digest, tok), "00-zz"+traceID[2:]+"-"+parentID+"-01;x", ""); code != http.StatusOK {
		t.Fatalf("bad traceparent: %d", code)
	}
	if code := do(f.blobURL(f.digest, tok+"x"), "", ""); code != http.StatusForbidden {
		t.Fatalf("bad token: %d", code)
	}

	var spans []sdktrace.ReadOnlySpan
	deadline := time.Now().Add(5 * time.Second)
	for {
		spans = f.spans.Ended()
		var pub bool
		for _, s := range spans {
			pub = pub || s.SpanKind() == trace.SpanKindServer && strings.Contains(s.Name(), "Download")
		}
		if pub && len(spans) >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var edge []sdktrace.ReadOnlySpan
	var download sdktrace.ReadOnlySpan
	for _, s := range spans {
		for _, secret := range []string{tok, bearer, "token="} {
			if strings.Contains(s.Name(), secret) {
				t.Errorf("span name %q holds a token", s.Name())
			}
			for _, a := range s.Attributes() {
				if strings.Contains(a.Value.Emit(), secret) {
					t.Errorf("span %q attribute %s holds a token", s.Name(), a.Key)
				}
			}
			for _, e := range s.Events() {
				for _, a := range e.Attributes {
					if strings.Contains(a.Value.Emit(), secret) {
						t.Errorf("span %q event %q attribute %s holds a token", s.Name(), e.Name, a.Key)
					}
				}
			}
		}
		switch {
		case s.Name() == "GET /v1/blobs/sha256/{hex}":
			edge = append(edge, s)
		case s.SpanKind() == trace.SpanKindServer && strings.Contains(s.Name(), "Download"):
			download = s
		}
	}
	if len(edge) != 4 {
		t.Fatalf("%d edge request spans, want 4 (of %d spans)", len(edge), len(spans))
	}
	attrs := func(s sdktrace.ReadOnlySpan) map[string]string {
		m := map[string]string{}
		for _, a := range s.Attributes() {
			m[string(a.Key)] = a.Value.Emit()
		}
		return m
	}
	wantPath := "/v1/blobs/sha256/" + strings.TrimPrefix(f.digest, "sha256:")
	for i, s := range edge[:2] {
		if s.SpanContext().TraceID().String() != traceID || s.Parent().SpanID().String() != parentID || !s.Parent().IsRemote() {
			t.Errorf("request %d: trace %s parent %s, want the caller's %s/%s", i, s.SpanContext().TraceID(), s.Parent().SpanID(), traceID, parentID)
		}
		a := attrs(s)
		if a["url.path"] != wantPath || a["http.response.status_code"] != "200" || a["custody.digest"] != f.digest || a["custody.decision_id"] != "d1" || a["http.request.method"] != "GET" {
			t.Errorf("request %d attributes: %v", i, a)
		}
		if s.SpanKind() != trace.SpanKindServer {
			t.Errorf("request %d: kind %v", i, s.SpanKind())
		}
	}
	if got := edge[2].SpanContext().TraceID().String(); got == traceID || edge[2].Parent().IsValid() {
		t.Errorf("a malformed traceparent was followed: trace %s, parent %v", got, edge[2].Parent())
	}
	if a := attrs(edge[3]); a["http.response.status_code"] != "403" || a["custody.refused"] == "" {
		t.Errorf("refused request attributes: %v", a)
	}
	if download == nil {
		t.Fatal("no publisher Download span")
	}
	if download.SpanContext().TraceID().String() != traceID {
		t.Errorf("the fill's Download is in trace %s, want the first request's %s", download.SpanContext().TraceID(), traceID)
	}
}

// A publisher that sends nothing is cut after the stall timeout: the
// client gets 504 rather than a hanging request, nothing is cached, and
// the next request fetches again.
func TestStalledOriginIsGatewayTimeout(t *testing.T) {
	f := start(t, func(c *cache.Config) { c.StallTimeout = 300 * time.Millisecond })
	f.pub.set(func(p *fakePublisher) { p.stall = true })
	u := f.blobURL(f.digest, f.token(t, f.key, f.digest, time.Minute))
	if code, body, _ := get(t, http.MethodGet, u); code != http.StatusGatewayTimeout || !strings.Contains(body, "stalled") {
		t.Fatalf("GET = %d %q, want 504 naming the stall", code, body)
	}
	if _, err := os.Stat(f.cached()); err == nil {
		t.Fatal("a stalled fetch was cached")
	}
	f.pub.set(func(p *fakePublisher) { p.stall = false })
	if code, body, _ := get(t, http.MethodGet, u); code != http.StatusOK || body != string(f.content) {
		t.Fatalf("GET after the stall = %d with %d bytes, want 200 with the blob", code, len(body))
	}
}

// A cache too small for the blob refuses it with 503 (another edge may
// serve it) instead of exceeding its bound.
func TestBlobLargerThanTheCacheIs503(t *testing.T) {
	f := start(t, func(c *cache.Config) { c.MaxBytes = 100 << 10 })
	u := f.blobURL(f.digest, f.token(t, f.key, f.digest, time.Minute))
	if code, body, _ := get(t, http.MethodGet, u); code != http.StatusServiceUnavailable || !strings.Contains(body, "cache full") {
		t.Fatalf("GET = %d %q, want 503 naming the full cache", code, body)
	}
}
