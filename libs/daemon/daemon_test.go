package daemon

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/identity/devca"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
)

func TestFlagsPrecedence(t *testing.T) {
	env := map[string]string{"X_NAME": "from-env", "X_WAIT": "3s"}
	parse := func(args ...string) (string, time.Duration, error) {
		f := NewFlags("t", func(k string) string { return env[k] })
		f.SetOutput(io.Discard)
		var name string
		var wait time.Duration
		f.String(&name, "name", "X_NAME", "default", "")
		f.Duration(&wait, "wait", "X_WAIT", time.Second, "")
		err := f.Parse(args)
		return name, wait, err
	}
	if name, wait, err := parse(); err != nil || name != "from-env" || wait != 3*time.Second {
		t.Errorf("env over default: got %q %v %v", name, wait, err)
	}
	if name, _, err := parse("--name", "from-flag"); err != nil || name != "from-flag" {
		t.Errorf("flag over env: got %q %v", name, err)
	}
	if _, _, err := parse("--unknown"); err == nil {
		t.Error("unknown flag: want an error")
	}
	env["X_WAIT"] = "soon"
	if _, _, err := parse(); err == nil || !strings.Contains(err.Error(), "X_WAIT") {
		t.Errorf("bad env value: got %v, want an error naming X_WAIT", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{Listen: "", LogLevel: "loud"}
	err := c.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"--trust-domain", "no identity", "--listen", "--log-level"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestServeWritesEndpointsAndStops(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("custody.test")
	ca, err := devca.NewSPIFFE(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	issued, err := ca.IssueSVID(spiffeid.RequireFromPath(td, "/service/test"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{identity.SVIDFile: issued.CertPEM, identity.SVIDKeyFile: issued.KeyPEM, identity.BundleFile: ca.CertPEM()} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{Service: "test", TrustDomain: "custody.test", SVIDDir: dir, Listen: "127.0.0.1:0",
		MetricsListen: "127.0.0.1:0", EndpointsFile: filepath.Join(dir, "endpoints.json"), LogLevel: "info", ShutdownTimeout: time.Second}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	d, err := Start(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	srv := d.NewServer(nil)
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, srv) }()

	var eps Endpoints
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(cfg.EndpointsFile)
		if err == nil && json.Unmarshal(b, &eps) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("endpoints file not written")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if eps["grpc"] == "" || eps["metrics"] == "" {
		t.Fatalf("endpoints = %v, want grpc and metrics", eps)
	}
	conn, err := rpc.Dial(eps["grpc"], d.ServiceID("test"), d.Source, telemetry.Discard("c"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not stop")
	}
}

// The OTLP endpoint: the flag wins over OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
// which wins over OTEL_EXPORTER_OTLP_ENDPOINT; a bad one is a start-up
// error naming where it came from.
func TestOTLPEndpointFlagAndEnv(t *testing.T) {
	env := map[string]string{}
	parse := func(args ...string) (Config, error) {
		f := NewFlags("t", func(k string) string { return env[k] })
		f.SetOutput(io.Discard)
		var c Config
		c.RegisterFlags(f)
		err := f.Parse(args)
		return c, err
	}
	env[telemetry.EnvOTLPEndpoint] = "http://all:4317"
	if c, err := parse(); err != nil || c.OTLPEndpoint != "http://all:4317" {
		t.Fatalf("general variable: %q, %v", c.OTLPEndpoint, err)
	}
	env[telemetry.EnvOTLPTracesEndpoint] = "https://traces:4317"
	if c, err := parse(); err != nil || c.OTLPEndpoint != "https://traces:4317" {
		t.Fatalf("traces variable: %q, %v", c.OTLPEndpoint, err)
	}
	c, err := parse("--otlp-endpoint", "collector:4317", "--otlp-insecure")
	if err != nil || c.OTLPEndpoint != "collector:4317" || !c.OTLPInsecure {
		t.Fatalf("flag: %+v, %v", c, err)
	}
	env[telemetry.EnvOTLPInsecure] = "true"
	if c, err := parse(); err != nil || !c.OTLPInsecure {
		t.Fatalf("insecure from the environment: %v, %v", c.OTLPInsecure, err)
	}
	env[telemetry.EnvOTLPInsecure] = "maybe"
	if _, err := parse(); err == nil || !strings.Contains(err.Error(), telemetry.EnvOTLPInsecure) {
		t.Fatalf("bad insecure value: %v", err)
	}
	delete(env, telemetry.EnvOTLPInsecure)
	env[telemetry.EnvOTLPProtocol] = "http/thrift"
	if _, err := parse(); err == nil || !strings.Contains(err.Error(), telemetry.EnvOTLPProtocol) {
		t.Fatalf("http/thrift: %v", err)
	}
	// OTLP/HTTP: the traces variable is a per-signal endpoint (used as it
	// is); the same value given as the flag, or through the general
	// variable, is a base endpoint (/v1/traces appended).
	env[telemetry.EnvOTLPProtocol] = "http/protobuf"
	env[telemetry.EnvOTLPTracesEndpoint] = "http://traces:4318/ingest"
	path := func(c Config) string {
		t.Helper()
		tg, err := telemetry.ParseOTLPEndpoint(c.OTLPEndpoint, c.otlpSettings())
		if err != nil {
			t.Fatal(err)
		}
		return tg.Path
	}
	if c, err := parse(); err != nil || c.OTLPProtocol != "http/protobuf" || path(c) != "/ingest" {
		t.Fatalf("traces variable over http/protobuf: %+v, %v", c, err)
	}
	if c, err := parse("--otlp-endpoint", "http://traces:4318/ingest"); err != nil || path(c) != "/ingest/v1/traces" {
		t.Fatalf("the flag is a base endpoint: %+v, %v", c, err)
	}
	delete(env, telemetry.EnvOTLPTracesEndpoint)
	if c, err := parse(); err != nil || c.OTLPEndpoint != "http://all:4317" || path(c) != "/v1/traces" {
		t.Fatalf("general variable is a base endpoint: %+v, %v", c, err)
	}
	if c, err := parse("--otlp-protocol", "grpc"); err != nil || c.OTLPProtocol != "grpc" {
		t.Fatalf("the protocol flag wins: %+v, %v", c, err)
	}
	c, err = parse("--otlp-protocol", "http/xml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--otlp-protocol") {
		t.Fatalf("bad protocol flag: %v", err)
	}
	delete(env, telemetry.EnvOTLPProtocol)
	env[telemetry.EnvOTLPTracesEndpoint] = "grpc://traces:4317"
	c, err = parse()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), telemetry.EnvOTLPTracesEndpoint) || !strings.Contains(err.Error(), `scheme "grpc"`) {
		t.Fatalf("bad endpoint: %v", err)
	}
}
