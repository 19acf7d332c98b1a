package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/daemon"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	badPolicy := filepath.Join(dir, "bundle")
	if err := os.Mkdir(badPolicy, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, badPolicy, ".manifest", `{"revision": "r1"}`)
	writeFile(t, badPolicy, "p.rego", "package other\n\ndeny contains \"x\" if { false }\n")
	badRoot := writeFile(t, dir, "root.json", `{"type":"https://custody.dev/trustroot/v1"}`)
	cfg, err := parseConfig([]string{"--trust-root", badRoot, "--policy-bundle", badPolicy, "--dry-run-env", "staging,Prod", "--finding-epoch-retention", "10m"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate()
	if err == nil {
		t.Fatal("Validate succeeded")
	}
	for _, want := range []string{"--trust-domain", "--catalog-addr", "--signer-addr", "--publisher-addr",
		"--trust-root " + badRoot + ": pinned trust root: malformed trust root", "--policy-bundle: policy bundle refused", "no module of package custody.admission", "--dry-run-env \"Prod\"", "--stop-state-file is required", "--finding-epoch-retention 10m0s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestPolicyBundleKeyNeedsBundle: a signature key with the built-in
// bundle is a mistake that is reported, not ignored.
func TestPolicyBundleKeyNeedsBundle(t *testing.T) {
	cfg, err := parseConfig([]string{"--policy-bundle-key", "k.pem"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--policy-bundle-key needs --policy-bundle") {
		t.Errorf("Validate: %v", err)
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	env := map[string]string{"CUSTODY_CATALOG_ADDR": "c:1", "CUSTODY_SIGNER_ADDR": "s:1", "CUSTODY_PUBLISHER_ADDR": "p:1", "CUSTODY_POLICY_BUNDLE": "b.tar.gz", "CUSTODY_DRY_RUN_ENV": "staging"}
	cfg, err := parseConfig([]string{"--signer-addr", "flag:1"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CatalogAddr != "c:1" || cfg.SignerAddr != "flag:1" || cfg.PublisherAddr != "p:1" || cfg.PolicyBundle != "b.tar.gz" || cfg.DryRunEnvs != "staging" {
		t.Errorf("config %+v: want env values with the flag winning", cfg)
	}
}

func TestRunServesAndFailsClosedWithoutDependencies(t *testing.T) {
	td := identitytest.New(t, "custody.test")
	dir := t.TempDir()
	svidDir := filepath.Join(dir, "svid")
	if err := os.Mkdir(svidDir, 0o700); err != nil {
		t.Fatal(err)
	}
	issued, err := td.CA.IssueSVID(td.ID("/service/gatekeeper"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, svidDir, identity.SVIDFile, string(issued.CertPEM))
	writeFile(t, svidDir, identity.SVIDKeyFile, string(issued.KeyPEM))
	writeFile(t, svidDir, identity.BundleFile, string(td.CA.CertPEM()))
	_, vkey, err := tlog.GenerateKey("custody.test/log")
	if err != nil {
		t.Fatal(err)
	}
	c := trustroottest.New(t, 1)
	root := c.Root(1, 1, time.Now(), nil, []trustroot.LogKey{{Origin: "custody.test/log", VerifierKey: vkey}})
	rootFile := writeFile(t, dir, "root.json", string(c.Sign(t, root)))
	dead := closedAddr(t)
	endpoints := filepath.Join(dir, "endpoints.json")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{
			"--trust-domain", "custody.test", "--svid-dir", svidDir, "--endpoints-file", endpoints,
			"--catalog-addr", dead, "--signer-addr", dead, "--publisher-addr", dead, "--trust-root", rootFile,
			"--stop-state-file", filepath.Join(dir, "stops.json"),
		}, func(string) string { return "" }, io.Discard)
	}()
	var eps daemon.Endpoints
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(endpoints); err == nil && json.Unmarshal(b, &eps) == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("endpoints file not written")
		}
	}

	conn, err := rpc.Dial(eps["grpc"], spiffeid.RequireFromPath(td.TD, "/service/gatekeeper"), td.Source(t, "/deployer/pipeline"), telemetry.Discard("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health: %v", err)
	}
	_, err = gatekeeperv1.NewGatekeeperServiceClient(conn).Admit(ctx, &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Admit with nothing to ask: %v, want Unavailable", err)
	}
	// The broker cannot learn the stop state while the signer's revocations
	// are unknown: it must fail closed.
	bconn, err := rpc.Dial(eps["grpc"], spiffeid.RequireFromPath(td.TD, "/service/gatekeeper"), td.Source(t, "/service/cdn-broker"), telemetry.Discard("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer bconn.Close()
	if _, err := gatekeeperv1.NewGatekeeperServiceClient(bconn).GetStopState(ctx, &gatekeeperv1.GetStopStateRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("GetStopState with the signer down: %v, want Unavailable", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// nothing is a catalog, signer and publisher that are never reached.
type nothing struct{}

func (nothing) Evidence(context.Context, string, string, string) (*admission.Evidence, error) {
	return nil, errors.New("unreachable")
}
func (nothing) AppendEvent(context.Context, admission.Event) (int64, error) {
	return 0, errors.New("unreachable")
}
func (nothing) RecordDeployment(context.Context, admission.Deployment) (int64, error) {
	return 0, errors.New("unreachable")
}
func (nothing) TrustRoots(context.Context, int64) ([][]byte, error) {
	return nil, errors.New("unreachable")
}
func (nothing) Revocations(context.Context) (map[string]time.Time, error) {
	return nil, errors.New("unreachable")
}
func (nothing) SignDecision(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("unreachable")
}
func (nothing) VerifyBlob(context.Context, string) error { return errors.New("unreachable") }

// TestReloadPolicy: on SIGHUP the bundle is read again; a good one is put
// in force, a bad one is logged and the one in force stays.
func TestReloadPolicy(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle")
	if err := os.Mkdir(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, bundle, ".manifest", `{"revision": "r1"}`)
	writeFile(t, bundle, "a.rego", "package custody.admission\n\ndeny contains \"no\" if { false }\n")
	cfg := &config{PolicyBundle: bundle}
	first, err := cfg.policy(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c := trustroottest.New(t, 1)
	pinned, err := trustroot.Pin(c.Sign(t, c.Root(1, 1, time.Now(), nil, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	gate, err := admission.New(admission.Config{Catalog: nothing{}, Signer: nothing{}, Publisher: nothing{}, Policy: first,
		TrustRoot: pinned, VerifierID: "spiffe://custody.test/service/gatekeeper", TrustDomain: "custody.test",
		Metrics: telemetry.Discard("gatekeeper").Metrics, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	hup := make(chan os.Signal)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- reloadPolicy(hup, cfg.policy, gate, logger)(ctx) }()

	writeFile(t, bundle, ".manifest", `{"revision": "r2"}`)
	hup <- syscall.SIGHUP
	hup <- syscall.SIGHUP // returns once the first reload is done
	if got := gate.Policy().Revision(); got != "r2" {
		t.Fatalf("after SIGHUP: revision %q, want r2", got)
	}
	writeFile(t, bundle, "a.rego", "package custody.admission\n\nallow := true\n")
	hup <- syscall.SIGHUP
	hup <- syscall.SIGHUP
	if got := gate.Policy().Revision(); got != "r2" {
		t.Errorf("after a bad bundle: revision %q, want r2 still in force", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "reload failed: the policy in force stays") || !strings.Contains(logs.String(), "no deny rule") {
		t.Errorf("log does not report the failed reload:\n%s", logs.String())
	}
}
