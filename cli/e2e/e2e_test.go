// Package e2e drives the real Custody processes the way `make demo` does:
// the dev stack, publish, admit, fetch, verify, and the attacks the stack
// must refuse.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"

	"github.com/custody-dev/custody/cli/internal/devstack"
)

var services = []string{"signer", "publisher", "catalog", "gatekeeper", "cdn-broker", "edge"}

// binaries builds custody and the services into a directory, unless
// CUSTODY_E2E_BIN names one that has them.
func binaries(t *testing.T) string {
	if dir := os.Getenv("CUSTODY_E2E_BIN"); dir != "" {
		return dir
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	build := func(module, pkg, out string) {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Dir = filepath.Join(root, module)
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", out, err, b)
		}
	}
	build("cli", "./cmd/custody", "custody")
	for _, s := range services {
		build("services/"+s, "./cmd/"+s, s)
	}
	return dir
}

type stack struct {
	t      *testing.T
	bin    string
	dir    string
	up     *exec.Cmd
	upOut  *bytes.Buffer
	info   devstack.Stack
	exited chan struct{} // closed when dev up has exited
	upErr  error
}

// start runs `custody dev up` with upArgs (e.g. --hsm) and waits for it.
func start(t *testing.T, upArgs ...string) *stack {
	return startAt(t, binaries(t), filepath.Join(t.TempDir(), "stack"), upArgs...)
}

// startPrepared is start with prepare called on the empty dev directory
// before the stack comes up.
func startPrepared(t *testing.T, prepare func(dir string)) *stack {
	dir := filepath.Join(t.TempDir(), "stack")
	if prepare != nil {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		prepare(dir)
	}
	return startAt(t, binaries(t), dir)
}

// startAt starts a dev stack of the binaries in bin on the directory dir,
// which may hold a site already (a restart, a restore), with upArgs.
func startAt(t *testing.T, bin, dir string, upArgs ...string) *stack {
	s := &stack{t: t, bin: bin, dir: dir, upOut: &bytes.Buffer{}}
	s.up = exec.Command(filepath.Join(s.bin, "custody"), append([]string{"dev", "up", "--dir", s.dir}, upArgs...)...)
	s.up.Stdout, s.up.Stderr = s.upOut, s.upOut
	if err := s.up.Start(); err != nil {
		t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() { s.upErr = s.up.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		_ = s.up.Process.Signal(syscall.SIGTERM)
		<-s.exited
		if t.Failed() {
			for _, svc := range services {
				b, _ := os.ReadFile(filepath.Join(s.dir, "logs", svc+".log"))
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("%s log (tail):\n%s", svc, b)
			}
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if b, err := os.ReadFile(filepath.Join(s.dir, "stack.json")); err == nil && json.Unmarshal(b, &s.info) == nil {
			break
		}
		select {
		case <-s.exited:
			t.Fatalf("dev up exited: %v\n%s", s.upErr, s.upOut)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev stack not up after 2 minutes:\n%s", s.upOut)
		}
	}
	return s
}

// custody runs the CLI against the stack and returns its output and exit code.
func (s *stack) custody(args ...string) (string, int) {
	cmd := exec.Command(filepath.Join(s.bin, "custody"), args...)
	cmd.Env = append(os.Environ(), "CUSTODY_DEV_DIR="+s.dir, "CUSTODY_TRACE_FILE="+filepath.Join(s.dir, "traces", "custody.jsonl"))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		s.t.Fatal(err)
	}
	return string(out), 0
}

func (s *stack) mustCustody(args ...string) string {
	s.t.Helper()
	out, code := s.custody(args...)
	if code != 0 {
		s.t.Fatalf("custody %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func (s *stack) conn(as, service string) *grpc.ClientConn {
	s.t.Helper()
	return s.connTo(as, service, s.info.Services[service]["grpc"])
}

// connTo is conn to a process of service at addr that is not the stack's
// own (a second broker, say).
func (s *stack) connTo(as, service, addr string) *grpc.ClientConn {
	s.t.Helper()
	l := devstack.Layout{Dir: s.dir}
	td := spiffeid.RequireTrustDomainFromString(s.info.TrustDomain)
	src, err := identity.OpenFiles(l.IdentityDir(as), td, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	c, err := rpc.Dial(addr, devstack.ServerID(td, service), src, telemetry.Discard("e2e"))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

func randomFile(t *testing.T, dir, name string, size int64) string {
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	return path
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ", a, b)
	}
}

func digestOf(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "digest" {
			return f[1]
		}
	}
	return ""
}

func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

func TestEndToEnd(t *testing.T) {
	s := start(t)
	work := t.TempDir()

	t.Run("publish and fetch back byte-identical", func(t *testing.T) {
		for _, tc := range []struct {
			version string
			size    int64
		}{{"1.0.0", 1 << 10}, {"1.1.0", 10 << 20}, {"1.2.0", 64 << 20}} {
			src := randomFile(t, work, "app-"+tc.version, tc.size)
			out := s.mustCustody("publish", src, "--name", "app", "--version", tc.version, "--channel", "staging")
			if digestOf(out) == "" {
				t.Fatalf("publish printed no digest:\n%s", out)
			}
			dst := filepath.Join(work, "fetched-"+tc.version)
			s.mustCustody("fetch", "app@"+tc.version, "--env", "staging", "-o", dst, "--bundle", dst+".bundle")
			sameFile(t, src, dst)
			s.mustCustody("verify", dst, "--bundle", dst+".bundle")
		}
	})

	// Issue 7's dev-stack check: after publishing and fetching through an
	// edge, nothing under the dev directory (the publisher's store, the
	// edges' caches, the catalog, logs, traces) holds plaintext of the
	// artifacts; only ciphertext and wrapped keys are at rest.
	t.Run("no plaintext of a published artifact under the dev directory", func(t *testing.T) {
		var datas [][]byte
		for _, version := range []string{"1.0.0", "1.1.0", "1.2.0"} {
			data, err := os.ReadFile(filepath.Join(work, "app-"+version))
			if err != nil {
				t.Fatal(err)
			}
			datas = append(datas, data)
		}
		hit, scanned, err := plaintextUnder(s.dir, datas...)
		if err != nil {
			t.Fatal(err)
		}
		if hit != "" {
			t.Errorf("1.0.0, 1.1.0, 1.2.0 (artifacts 0, 1, 2): %s", hit)
		}
		// At least the publisher's objects and one edge's cache files.
		if total := int64(len(datas[0]) + len(datas[1]) + len(datas[2])); scanned < 2*total {
			t.Errorf("scanned only %d bytes under %s, less than twice the %d published", scanned, s.dir, total)
		}
		// The scan can fail: the fetched copy outside the dev directory holds it.
		if hit, _, err := plaintextUnder(work, datas[1]); err != nil || hit == "" {
			t.Errorf("the scan did not find the plaintext in %s (err %v)", work, err)
		}
	})

	t.Run("same bytes again are idempotent, other bytes are refused", func(t *testing.T) {
		out := s.mustCustody("publish", filepath.Join(work, "app-1.0.0"), "--name", "app", "--version", "1.0.0", "--channel", "staging")
		if !strings.Contains(out, "already published") {
			t.Errorf("re-publish of the same bytes:\n%s", out)
		}
		other := randomFile(t, work, "other", 100)
		out, code := s.custody("publish", other, "--name", "app", "--version", "1.0.0", "--channel", "staging")
		if code == 0 || !strings.Contains(out, "AlreadyExists") {
			t.Errorf("re-publish of other bytes: exit %d\n%s", code, out)
		}
	})

	t.Run("unknown version and wrong environment are denied", func(t *testing.T) {
		out, code := s.custody("admit", "app@9.9.9", "--env", "staging")
		if code != 1 || !strings.Contains(out, "not in the catalog") {
			t.Errorf("unknown version: exit %d\n%s", code, out)
		}
		out, code = s.custody("admit", "app@1.0.0", "--env", "prod")
		if code != 1 || !strings.Contains(out, "DENY") {
			t.Errorf("staging artifact to prod: exit %d\n%s", code, out)
		}
		dst := filepath.Join(work, "never")
		if out, code := s.custody("fetch", "app@9.9.9", "--env", "staging", "-o", dst); code == 0 {
			t.Errorf("fetch of an unknown version succeeded:\n%s", out)
		}
		if _, err := os.Stat(dst); !os.IsNotExist(err) {
			t.Errorf("output file exists after a denied fetch")
		}
	})

	t.Run("a flipped byte in the store fails the fetch and leaves no output", func(t *testing.T) {
		// One artifact fetched before (cached at the edge), one never fetched.
		fresh := randomFile(t, work, "fresh", 256<<10)
		digest := digestOf(s.mustCustody("publish", fresh, "--name", "fresh", "--version", "1", "--channel", "staging"))
		cachedDigest := digestOf(s.mustCustody("publish", filepath.Join(work, "app-1.1.0"), "--name", "app", "--version", "1.1.0", "--channel", "staging"))
		for ref, d := range map[string]string{"fresh@1": digest, "app@1.1.0": cachedDigest} {
			blob := s.ciphertextPath(t, d)
			flipByte(t, blob, 100)
			dst := filepath.Join(work, "corrupt-"+ref)
			out, code := s.custody("fetch", ref, "--env", "staging", "-o", dst)
			if code == 0 {
				t.Errorf("%s: fetch of a corrupted blob succeeded:\n%s", ref, out)
			}
			if !strings.Contains(out, d) {
				t.Errorf("%s: error does not name the digest %s:\n%s", ref, d, out)
			}
			if _, err := os.Stat(dst); !os.IsNotExist(err) {
				t.Errorf("%s: output file left behind", ref)
			}
			matches, _ := filepath.Glob(filepath.Join(work, ".corrupt-*"))
			if len(matches) > 0 {
				t.Errorf("%s: partial files left behind: %v", ref, matches)
			}
			flipByte(t, blob, 100) // restore
		}
	})

	t.Run("store rewrap re-wraps every data key and fetches still work", func(t *testing.T) {
		if out, code := s.custody("store", "rewrap", "--as", "builder"); code == 0 || !strings.Contains(out, "PermissionDenied") {
			t.Errorf("store rewrap as a builder: exit %d, want PermissionDenied:\n%s", code, out)
		}
		out := s.mustCustody("store", "rewrap")
		if !strings.Contains(out, "0 failed") || strings.Contains(out, "rewrapped 0 ") {
			t.Errorf("store rewrap: %s", out)
		}
		dst := filepath.Join(work, "after-rewrap")
		s.mustCustody("fetch", "app@1.1.0", "--env", "staging", "-o", dst)
	})

	t.Run("authorization matrix", func(t *testing.T) {
		ctx := t.Context()
		_, err := signerv1.NewSignerServiceClient(s.conn("builder", "signer")).SignArtifact(ctx, &signerv1.SignArtifactRequest{Channel: "dev", Statement: []byte("{}")})
		wantDenied(t, "builder → signer SignArtifact", err, "/builder/ci")

		up, err := publisherv1.NewPublisherServiceClient(s.conn("deployer", "publisher")).Upload(ctx)
		if err == nil {
			_ = up.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Header{Header: &publisherv1.UploadHeader{Name: "x", Version: "1", Channel: "dev"}}})
			_, err = up.CloseAndRecv()
		}
		wantDenied(t, "deployer → publisher Upload", err, "/deployer/pipeline")
		// ATTACKS.md #38: a deployer that skips the gatekeeper and the
		// broker cannot read blobs from the publisher; only edges can.
		dl, err := publisherv1.NewPublisherServiceClient(s.conn("deployer", "publisher")).Download(ctx, &publisherv1.DownloadRequest{Digest: digestOf(s.mustCustody("publish", filepath.Join(work, "app-1.0.0"), "--name", "app", "--version", "1.0.0", "--channel", "staging"))})
		if err == nil {
			_, err = dl.Recv()
		}
		wantDenied(t, "deployer → publisher Download", err, "/deployer/pipeline")

		cat := catalogv1.NewCatalogServiceClient(s.conn("builder", "catalog"))
		_, err = cat.RecordArtifact(ctx, &catalogv1.RecordArtifactRequest{})
		wantDenied(t, "builder → catalog RecordArtifact", err, "/builder/ci")
		_, err = cat.AppendEvent(ctx, &catalogv1.AppendEventRequest{Type: "x"})
		wantDenied(t, "builder → catalog AppendEvent", err, "/builder/ci")

		// Allowed: any member reads the catalog and the signer's keys.
		if _, err := catalogv1.NewCatalogServiceClient(s.conn("auditor", "catalog")).GetCheckpoint(ctx, &catalogv1.GetCheckpointRequest{}); err != nil {
			t.Errorf("auditor → catalog GetCheckpoint: %v", err)
		}
		if _, err := signerv1.NewSignerServiceClient(s.conn("deployer", "signer")).ListPublicKeys(ctx, &signerv1.ListPublicKeysRequest{}); err != nil {
			t.Errorf("deployer → signer ListPublicKeys: %v", err)
		}
		// The publisher's own calls (sign, record), the gatekeeper's (sign
		// decision, verify blob, append event), the edge's (download) and
		// the deployer's (admit, issue URL) are allowed: the fetches above
		// made them.
	})

	t.Run("TLS refuses a foreign trust domain and a missing certificate", func(t *testing.T) {
		addr := s.info.Services["catalog"]["grpc"]
		td := spiffeid.RequireTrustDomainFromString(s.info.TrustDomain)
		real, err := identity.OpenFiles(devstack.Layout{Dir: s.dir}.IdentityDir("auditor"), td, nil)
		if err != nil {
			t.Fatal(err)
		}
		foreign := identitytest.New(t, "evil.example").Source(t, "/admin/ops")
		mixed := &withBundle{Source: foreign, bundles: real}
		c, err := rpc.Dial(addr, devstack.ServerID(td, "catalog"), mixed, telemetry.Discard("e2e"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = healthpb.NewHealthClient(c).Check(t.Context(), &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Errorf("foreign trust domain: %v, want refused at the handshake (Unavailable)", err)
		}
		cfg := rpc.ClientTLS(real, devstack.ServerID(td, "catalog"))
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
		nc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_, err = healthpb.NewHealthClient(nc).Check(t.Context(), &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Errorf("no client certificate: %v, want refused at the handshake (Unavailable)", err)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		for _, svc := range services {
			body := get(t, "http://"+s.info.Services[svc]["metrics"]+"/metrics")
			if !strings.Contains(body, "custody_rpc_requests_total") && svc != "edge" {
				t.Errorf("%s /metrics lacks custody_rpc_requests_total", svc)
			}
		}
		if body := get(t, "http://"+s.info.Services["signer"]["metrics"]+"/metrics"); !strings.Contains(body, `custody_authz_denied_total{method="/custody.signer.v1.SignerService/SignArtifact",service="signer"} `) {
			t.Errorf("signer /metrics does not count the builder's denial")
		}
		if body := get(t, "http://"+s.info.Services["publisher"]["metrics"]+"/metrics"); !strings.Contains(body, "custody_integrity_failures_total") {
			t.Errorf("publisher /metrics does not count integrity failures")
		}
	})

	t.Run("one trace spans publisher, signer and catalog", func(t *testing.T) {
		time.Sleep(6 * time.Second) // span batches are exported every 5s
		traces := map[string]map[string]bool{}
		for _, svc := range []string{"publisher", "signer", "catalog"} {
			for id := range traceIDs(t, filepath.Join(s.dir, "traces", svc+".jsonl")) {
				if traces[id] == nil {
					traces[id] = map[string]bool{}
				}
				traces[id][svc] = true
			}
		}
		for _, svcs := range traces {
			if len(svcs) == 3 {
				return
			}
		}
		t.Errorf("no trace id appears in publisher, signer and catalog spans (%d traces)", len(traces))
	})

	t.Run("a fetch is one trace from the CLI through broker, edge and publisher", func(t *testing.T) {
		// A new artifact, so that the edge misses and fills from the
		// publisher within the fetch's trace.
		src := randomFile(t, work, "traced", 256<<10)
		s.mustCustody("publish", src, "--name", "traced", "--version", "1.0.0", "--channel", "staging")
		dst := filepath.Join(work, "fetched-traced")
		s.mustCustody("fetch", "traced@1.0.0", "--env", "staging", "-o", dst)
		sameFile(t, src, dst)
		time.Sleep(6 * time.Second) // span batches are exported every 5s
		root := ""
		for _, sp := range spans(t, filepath.Join(s.dir, "traces", "custody.jsonl")) {
			if sp.Name == "custody fetch" && sp.attr("custody.ref") == "traced@1.0.0" {
				if sp.Parent.TraceID != "" && sp.Parent.TraceID != "00000000000000000000000000000000" {
					t.Errorf("the fetch's span has a parent: %+v", sp.Parent)
				}
				root = sp.SpanContext.TraceID
			}
		}
		if root == "" {
			t.Fatal("the CLI wrote no custody fetch span")
		}
		edgeSpans, downloads := 0, 0
		for _, svc := range []string{"gatekeeper", "catalog", "cdn-broker", "edge", "edge2", "publisher"} {
			n := 0
			for _, sp := range spans(t, filepath.Join(s.dir, "traces", svc+".jsonl")) {
				if sp.SpanContext.TraceID != root {
					continue
				}
				n++
				// The gatekeeper reads the publisher too: the edge's
				// fill is the Download.
				if svc == "publisher" && strings.HasSuffix(sp.Name, "PublisherService/Download") {
					downloads++
				}
				if strings.HasPrefix(svc, "edge") && sp.Name == "GET /v1/blobs/sha256/{hex}" {
					edgeSpans++
					if sp.attr("http.response.status_code") != "200" {
						t.Errorf("%s: the fetch's request answered %s", svc, sp.attr("http.response.status_code"))
					}
				}
			}
			if n == 0 && !strings.HasPrefix(svc, "edge") {
				t.Errorf("%s has no span of the fetch's trace %s", svc, root)
			}
		}
		if edgeSpans == 0 {
			t.Errorf("no edge request span in the fetch's trace %s", root)
		}
		if downloads == 0 {
			t.Errorf("no publisher Download (the edge's fill) in the fetch's trace %s", root)
		}
		// The edge URLs carry tokens: no trace file may hold one.
		files, _ := filepath.Glob(filepath.Join(s.dir, "traces", "*.jsonl"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, bad := range []string{"token=", "Bearer ", "custody-edge-token"} {
				if bytes.Contains(b, []byte(bad)) {
					t.Errorf("%s holds %q", filepath.Base(f), bad)
				}
			}
		}
	})

	t.Run("dev down stops every process", func(t *testing.T) {
		s.mustCustody("dev", "down", "--dir", s.dir)
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			t.Fatal("dev up did not exit after dev down")
		}
		for name, pid := range s.info.PIDs {
			if syscall.Kill(pid, 0) == nil {
				t.Errorf("%s (pid %d) still running", name, pid)
			}
		}
	})
}

func wantDenied(t *testing.T, what string, err error, caller string) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("%s: %v, want PermissionDenied", what, err)
		return
	}
	if !strings.Contains(status.Convert(err).Message(), caller) {
		t.Errorf("%s: denial %q does not name the caller", what, status.Convert(err).Message())
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func traceIDs(t *testing.T, path string) map[string]bool {
	ids := map[string]bool{}
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("trace file: %v", err)
		return ids
	}
	defer f.Close()
	dec := json.NewDecoder(bufio.NewReader(f))
	for {
		var span struct {
			SpanContext struct{ TraceID string }
		}
		if err := dec.Decode(&span); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Logf("%s: %v", path, err)
			}
			return ids
		}
		ids[span.SpanContext.TraceID] = true
	}
}

// span is the part of a trace-file line (stdouttrace's JSON) the tests read.
type span struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
	Attributes  []struct {
		Key   string
		Value struct{ Value any }
	}
}

func (s span) attr(key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			return fmt.Sprint(a.Value.Value)
		}
	}
	return ""
}

func spans(t *testing.T, path string) []span {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("trace file: %v", err)
		return nil
	}
	defer f.Close()
	var out []span
	dec := json.NewDecoder(bufio.NewReader(f))
	for {
		var sp span
		if err := dec.Decode(&sp); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Logf("%s: %v", path, err)
			}
			return out
		}
		out = append(out, sp)
	}
}

// withBundle presents one SVID but verifies servers with another bundle.
type withBundle struct {
	identity.Source
	bundles identity.Source
}

func (w *withBundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return w.bundles.GetX509BundleForTrustDomain(td)
}

// ciphertextPath finds the publisher's ciphertext object of a blob through
// its key record (blobs are encrypted at rest).
func (s *stack) ciphertextPath(t *testing.T, digest string) string {
	t.Helper()
	hexd := strings.TrimPrefix(digest, "sha256:")
	objects := filepath.Join(s.dir, "data", "publisher", "blobs", "objects")
	b, err := os.ReadFile(filepath.Join(objects, "keys", "sha256", hexd[:2], hexd))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(objects, filepath.FromSlash(rec.Data))
}
