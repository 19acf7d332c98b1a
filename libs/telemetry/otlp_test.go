package telemetry

import (
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	collectortracev1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/custody-dev/custody/libs/identity/devca"
)

func TestParseOTLPEndpoint(t *testing.T) {
	for _, c := range []struct {
		raw      string
		insecure bool // the host:port setting
		proto    string
		signal   bool // a per-signal (traces) endpoint
		want     OTLPTarget
		err      string
	}{
		{raw: "http://collector:4317", want: grpcAt("collector:4317", true)},
		{raw: "https://collector:4317", want: grpcAt("collector:4317", false)},
		// A URL's scheme decides, whatever the insecure setting says.
		{raw: "https://collector:4317", insecure: true, want: grpcAt("collector:4317", false)},
		{raw: "http://collector:4317", insecure: false, want: grpcAt("collector:4317", true)},
		{raw: "HTTPS://collector:4317/", want: grpcAt("collector:4317", false)},
		{raw: "https://otel.example.com", want: grpcAt("otel.example.com:443", false)},
		{raw: "http://localhost", want: grpcAt("localhost:80", true)},
		{raw: "http://127.0.0.1:4317", want: grpcAt("127.0.0.1:4317", true)},
		{raw: "http://[::1]:4317", want: grpcAt("[::1]:4317", true)},
		{raw: "https://[::1]", want: grpcAt("[::1]:443", false)},
		{raw: "  http://collector:4317  ", want: grpcAt("collector:4317", true)},
		// The flag's host:port form: TLS unless insecure.
		{raw: "collector:4317", want: grpcAt("collector:4317", false)},
		{raw: "collector:4317", insecure: true, want: grpcAt("collector:4317", true)},
		{raw: "[::1]:4317", want: grpcAt("[::1]:4317", false)},

		{raw: "", err: "empty"},
		{raw: "collector", err: "missing port"},
		{raw: "collector:", err: "port"},
		{raw: "collector:0", err: "port"},
		{raw: "collector:70000", err: "port"},
		{raw: "collector:grpc", err: "port"},
		{raw: ":4317", err: "no host"},
		{raw: "grpc://collector:4317", err: `scheme "grpc"`},
		{raw: "unix:///run/otel.sock", err: `scheme "unix"`},
		{raw: "http://collector:4318/v1/traces", err: "no path"},
		{raw: "http://collector:4318/v1/traces", signal: true, err: "set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"},
		{raw: "http://collector:4317", proto: "grpc", want: grpcAt("collector:4317", true)},
		{raw: "http://collector:4317", signal: true, want: grpcAt("collector:4317", true)},

		// OTLP/HTTP: a base endpoint gets /v1/traces appended to its path.
		{raw: "http://collector:4318", proto: ProtocolHTTPProtobuf, want: httpAt(ProtocolHTTPProtobuf, "collector:4318", true, "/v1/traces")},
		{raw: "http://collector:4318/", proto: ProtocolHTTPProtobuf, want: httpAt(ProtocolHTTPProtobuf, "collector:4318", true, "/v1/traces")},
		{raw: "https://otel.example.com/otlp", proto: ProtocolHTTPProtobuf, want: httpAt(ProtocolHTTPProtobuf, "otel.example.com:443", false, "/otlp/v1/traces")},
		{raw: "https://otel.example.com/otlp/", proto: ProtocolHTTPJSON, want: httpAt(ProtocolHTTPJSON, "otel.example.com:443", false, "/otlp/v1/traces")},
		{raw: "https://collector:4318", proto: ProtocolHTTPProtobuf, insecure: true, want: httpAt(ProtocolHTTPProtobuf, "collector:4318", false, "/v1/traces")},
		{raw: "collector:4318", proto: ProtocolHTTPProtobuf, want: httpAt(ProtocolHTTPProtobuf, "collector:4318", false, "/v1/traces")},
		{raw: "collector:4318", proto: ProtocolHTTPProtobuf, insecure: true, want: httpAt(ProtocolHTTPProtobuf, "collector:4318", true, "/v1/traces")},
		// A per-signal endpoint is used as it is; no path is the root.
		{raw: "http://collector:4318/v1/traces", proto: ProtocolHTTPProtobuf, signal: true, want: httpAt(ProtocolHTTPProtobuf, "collector:4318", true, "/v1/traces")},
		{raw: "http://collector:4318/custom/spans", proto: ProtocolHTTPProtobuf, signal: true, want: httpAt(ProtocolHTTPProtobuf, "collector:4318", true, "/custom/spans")},
		{raw: "http://collector:4318", proto: ProtocolHTTPProtobuf, signal: true, want: httpAt(ProtocolHTTPProtobuf, "collector:4318", true, "/")},
		{raw: "http://collector:4318/v1/traces", proto: ProtocolHTTPProtobuf, want: httpAt(ProtocolHTTPProtobuf, "collector:4318", true, "/v1/traces/v1/traces")},
		{raw: "http://collector:4318/v1/traces?x=1", proto: ProtocolHTTPProtobuf, err: "no query"},
		{raw: "http://collector:4318/v1/traces?", proto: ProtocolHTTPProtobuf, err: "no query"},
		{raw: "http://collector:4318/a%20b", proto: ProtocolHTTPProtobuf, err: "spaces or control"},
		{raw: "grpc://collector:4318", proto: ProtocolHTTPProtobuf, err: `scheme "grpc"`},
		{raw: "https://user:s3cret@collector:4318/v1/traces", proto: ProtocolHTTPProtobuf, err: "user information"},
		{raw: "http://collector:4318", proto: "http/xml", err: `"http/xml"`},
		{raw: "http://collector:4317?x=1", err: "no query"},
		{raw: "http://collector:4317#f", err: "no query or fragment"},
		{raw: "http://:4317", err: "no host"},
		{raw: "http://collector:", err: "empty port"},
		{raw: "http://collector:0", err: "port"},
		{raw: "http://collector:99999", err: "port"},
		{raw: "http://col lector:4317", err: "not a URL"},
		{raw: "https://user:s3cret@collector:4317", err: "user information"},
		{raw: "user:s3cret@collector:4317", err: "user information"},
	} {
		got, err := ParseOTLPEndpoint(c.raw, OTLPSettings{Protocol: c.proto, Insecure: c.insecure, Signal: c.signal})
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseOTLPEndpoint(%q) = %+v, %v; want an error containing %q", c.raw, got, err, c.err)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error for %q repeats the password: %v", c.raw, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseOTLPEndpoint(%q, %q insecure %v signal %v) = %+v, %v; want %+v", c.raw, c.proto, c.insecure, c.signal, got, err, c.want)
		}
	}
}

func grpcAt(hostPort string, insecure bool) OTLPTarget {
	return OTLPTarget{Protocol: ProtocolGRPC, HostPort: hostPort, Insecure: insecure}
}

func httpAt(proto, hostPort string, insecure bool, path string) OTLPTarget {
	return OTLPTarget{Protocol: proto, HostPort: hostPort, Insecure: insecure, Path: path}
}

func TestOTLPFromEnv(t *testing.T) {
	env := map[string]string{}
	get := func(k string) string { return env[k] }
	if v, k := OTLPEndpointFromEnv(get); v != "" || k != "" {
		t.Fatalf("nothing set: got %q from %q", v, k)
	}
	env[EnvOTLPEndpoint] = "http://all:4317"
	if v, k := OTLPEndpointFromEnv(get); v != "http://all:4317" || k != EnvOTLPEndpoint {
		t.Fatalf("got %q from %q", v, k)
	}
	env[EnvOTLPTracesEndpoint] = "https://traces:4317"
	if v, k := OTLPEndpointFromEnv(get); v != "https://traces:4317" || k != EnvOTLPTracesEndpoint {
		t.Fatalf("the traces variable must win: got %q from %q", v, k)
	}

	if ins, err := OTLPInsecureFromEnv(get); ins || err != nil {
		t.Fatalf("unset insecure: %v, %v", ins, err)
	}
	env[EnvOTLPInsecure] = "TRUE"
	if ins, err := OTLPInsecureFromEnv(get); !ins || err != nil {
		t.Fatalf("insecure=TRUE: %v, %v", ins, err)
	}
	env[EnvOTLPTracesInsecure] = "false"
	if ins, err := OTLPInsecureFromEnv(get); ins || err != nil {
		t.Fatalf("the traces variable must win: %v, %v", ins, err)
	}
	env[EnvOTLPTracesInsecure] = "yes"
	if _, err := OTLPInsecureFromEnv(get); err == nil || !strings.Contains(err.Error(), EnvOTLPTracesInsecure) {
		t.Fatalf("insecure=yes: %v", err)
	}
}

func TestOTLPProtocolFromEnv(t *testing.T) {
	env := map[string]string{}
	get := func(k string) string { return env[k] }
	if p, err := OTLPProtocolFromEnv(get); p != "" || err != nil {
		t.Fatalf("unset: %q, %v", p, err)
	}
	for _, p := range []string{ProtocolGRPC, ProtocolHTTPProtobuf, ProtocolHTTPJSON} {
		env[EnvOTLPProtocol] = p
		if got, err := OTLPProtocolFromEnv(get); got != p || err != nil {
			t.Fatalf("%s: %q, %v", p, got, err)
		}
	}
	env[EnvOTLPTracesProtocol] = "grpc" // the traces variable wins
	if p, err := OTLPProtocolFromEnv(get); p != ProtocolGRPC || err != nil {
		t.Fatalf("traces grpc: %q, %v", p, err)
	}
	env[EnvOTLPTracesProtocol] = "http/thrift"
	if _, err := OTLPProtocolFromEnv(get); err == nil || !strings.Contains(err.Error(), EnvOTLPTracesProtocol) || !strings.Contains(err.Error(), "http/protobuf") {
		t.Fatalf("traces http/thrift: %v", err)
	}
	delete(env, EnvOTLPTracesProtocol)
	env[EnvOTLPProtocol] = "HTTP/PROTOBUF" // the specification's values are lower case
	if _, err := OTLPProtocolFromEnv(get); err == nil || !strings.Contains(err.Error(), EnvOTLPProtocol) {
		t.Fatalf("upper case: %v", err)
	}
	if DefaultOTLPProtocol != ProtocolGRPC {
		t.Fatal("the default changed: existing gRPC endpoints would lose their spans (decision 0107)")
	}
}

// A bad endpoint is an error from New, before any file is opened.
func TestNewRefusesABadEndpoint(t *testing.T) {
	file := filepath.Join(t.TempDir(), "spans.jsonl")
	if _, err := New(context.Background(), Config{Service: "t", TraceFile: file, OTLPEndpoint: "grpc://collector:4317"}); err == nil {
		t.Fatal("New accepted grpc://")
	}
	if _, err := New(context.Background(), Config{Service: "t", TraceFile: file, OTLPEndpoint: "http://collector:4318", OTLPProtocol: "http/thrift"}); err == nil {
		t.Fatal("New accepted http/thrift")
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("trace file created for a refused configuration: %v", err)
	}
}

// collector is a loopback OTLP/gRPC trace collector.
type collector struct {
	collectortracev1.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans map[string]string // span name -> service.name
}

func (c *collector) Export(_ context.Context, req *collectortracev1.ExportTraceServiceRequest) (*collectortracev1.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		svc := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				svc = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans[s.GetName()] = svc
			}
		}
	}
	return &collectortracev1.ExportTraceServiceResponse{}, nil
}

func startCollector(t *testing.T, opts ...grpc.ServerOption) (*collector, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{spans: map[string]string{}}
	srv := grpc.NewServer(opts...)
	collectortracev1.RegisterTraceServiceServer(srv, c)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return c, lis.Addr().String()
}

// exportOne sends one span named name through New's exporter and flushes.
func exportOne(t *testing.T, cfg Config, name string) error {
	return exportWithin(t, cfg, name, 10*time.Second)
}

func exportWithin(t *testing.T, cfg Config, name string, d time.Duration) error {
	t.Helper()
	tel, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.TracerProvider.Tracer("test").Start(context.Background(), name)
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return tel.Shutdown(ctx)
}

func (c *collector) service(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.spans[name]
}

func TestExportToLoopbackCollector(t *testing.T) {
	t.Run("http URL is plaintext", func(t *testing.T) {
		col, addr := startCollector(t)
		// The environment's insecure setting does not matter to a URL.
		t.Setenv(EnvOTLPInsecure, "false")
		if err := exportOne(t, Config{Service: "edge", OTLPEndpoint: "http://" + addr}, "plain"); err != nil {
			t.Fatal(err)
		}
		if got := col.service("plain"); got != "edge" {
			t.Fatalf("collector got span %q from service %q; want edge", "plain", got)
		}
	})
	t.Run("https URL is TLS", func(t *testing.T) {
		ca, err := devca.NewHTTPS("otlp test", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		iss, err := ca.IssueServer(nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		col, addr := startCollector(t, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
		caFile := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", caFile)
		// https wins over an insecure setting in the environment.
		t.Setenv(EnvOTLPInsecure, "true")
		if err := exportOne(t, Config{Service: "catalog", OTLPEndpoint: "https://" + addr}, "tls"); err != nil {
			t.Fatal(err)
		}
		if got := col.service("tls"); got != "catalog" {
			t.Fatalf("collector got span %q from service %q; want catalog", "tls", got)
		}
		// The same TLS collector named with http:// is not reached.
		// (The batcher reports the failed export to OpenTelemetry's error
		// handler, not from Shutdown.)
		_ = exportWithin(t, Config{Service: "catalog", OTLPEndpoint: "http://" + addr}, "not-tls", 2*time.Second)
		if got := col.service("not-tls"); got != "" {
			t.Fatalf("the TLS collector received a plaintext span from %q", got)
		}
	})
	t.Run("host:port with insecure", func(t *testing.T) {
		col, addr := startCollector(t)
		if err := exportOne(t, Config{Service: "signer", OTLPEndpoint: addr, OTLPInsecure: true}, "flag"); err != nil {
			t.Fatal(err)
		}
		if got := col.service("flag"); got != "signer" {
			t.Fatalf("collector got span from %q; want signer", got)
		}
	})
}

// Whatever an operator writes, under any protocol, the parser does not
// panic, an accepted endpoint is a dialable host and port, gRPC has no
// path, an OTLP/HTTP path starts at the root, holds no space or control
// character, and a base endpoint's ends in /v1/traces; an error never
// repeats a password given in the URL.
func FuzzParseOTLPEndpoint(f *testing.F) {
	for _, s := range []string{"http://collector:4317", "https://[::1]", "collector:4317", "grpc://x:1", "https://u:pw@h:1", "http://h:4318/v1/traces", "http://h:4318/a/", "http://%zz", "http://h:1/%00", ":", ""} {
		f.Add(s, false, uint8(0), false)
		f.Add(s, true, uint8(1), true)
		f.Add(s, false, uint8(2), false)
	}
	protos := []string{"", ProtocolGRPC, ProtocolHTTPProtobuf, ProtocolHTTPJSON}
	f.Fuzz(func(t *testing.T, raw string, insecure bool, proto uint8, signal bool) {
		p := protos[int(proto)%len(protos)]
		got, err := ParseOTLPEndpoint(raw, OTLPSettings{Protocol: p, Insecure: insecure, Signal: signal})
		if err != nil {
			if strings.Contains(raw, "://") && strings.Contains(raw, "@") {
				if u, perr := url.Parse(strings.TrimSpace(raw)); perr == nil && u.User != nil {
					if pw, ok := u.User.Password(); ok && len(pw) > 3 && strings.Contains(err.Error(), pw) {
						t.Fatalf("error repeats the password: %v", err)
					}
				}
			}
			return
		}
		if cerr := checkHostPort(got.HostPort); cerr != nil {
			t.Fatalf("accepted %q as %+v, not a host:port: %v", raw, got, cerr)
		}
		switch got.Protocol {
		case ProtocolGRPC:
			if p != "" && p != ProtocolGRPC || got.Path != "" {
				t.Fatalf("%q under %q: %+v", raw, p, got)
			}
		case ProtocolHTTPProtobuf, ProtocolHTTPJSON:
			if got.Protocol != p || !strings.HasPrefix(got.Path, "/") || strings.ContainsFunc(got.Path, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
				t.Fatalf("%q under %q: %+v", raw, p, got)
			}
			if !signal && !strings.HasSuffix(got.Path, OTLPTracesPath) {
				t.Fatalf("base endpoint %q: path %q lacks %s", raw, got.Path, OTLPTracesPath)
			}
		default:
			t.Fatalf("%q: protocol %q", raw, got.Protocol)
		}
	})
}
