package telemetry

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	collectortracev1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/custody-dev/custody/libs/identity/devca"
)

// httpCollector is a loopback OTLP/HTTP trace receiver: it decodes each
// POST (protobuf ExportTraceServiceRequest, or its JSON form) and records
// the path, content type and test header it came with.
type httpCollector struct {
	mu       sync.Mutex
	requests []httpExport
}

type httpExport struct {
	Path, ContentType, Header string
	Spans                     map[string]string // span name -> service.name
}

// otlpJSON is the part of OTLP/JSON these tests read (field names in
// lowerCamelCase, as the OTLP specification's JSON mapping has them).
type otlpJSON struct {
	ResourceSpans []struct {
		Resource struct {
			Attributes []struct {
				Key   string `json:"key"`
				Value struct {
					StringValue string `json:"stringValue"`
				} `json:"value"`
			} `json:"attributes"`
		} `json:"resource"`
		ScopeSpans []struct {
			Spans []struct {
				Name string `json:"name"`
			} `json:"spans"`
		} `json:"scopeSpans"`
	} `json:"resourceSpans"`
}

func (c *httpCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(io.LimitReader(body, 4<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ex := httpExport{Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"), Header: r.Header.Get("X-Custody-Test"), Spans: map[string]string{}}
	switch ex.ContentType {
	case "application/x-protobuf":
		var req collectortracev1.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, rs := range req.GetResourceSpans() {
			svc := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					svc = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					ex.Spans[s.GetName()] = svc
				}
			}
		}
		out, _ := proto.Marshal(&collectortracev1.ExportTraceServiceResponse{})
		defer func() { w.Header().Set("Content-Type", "application/x-protobuf"); _, _ = w.Write(out) }()
	case "application/json":
		var req otlpJSON
		if err := json.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, rs := range req.ResourceSpans {
			svc := ""
			for _, kv := range rs.Resource.Attributes {
				if kv.Key == "service.name" {
					svc = kv.Value.StringValue
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					ex.Spans[s.Name] = svc
				}
			}
		}
		defer func() { w.Header().Set("Content-Type", "application/json"); _, _ = w.Write([]byte("{}")) }()
	default:
		http.Error(w, "unsupported content type", http.StatusUnsupportedMediaType)
		return
	}
	c.mu.Lock()
	c.requests = append(c.requests, ex)
	c.mu.Unlock()
}

// find returns the export that carried the span named name.
func (c *httpCollector) find(name string) (httpExport, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.requests {
		if _, ok := r.Spans[name]; ok {
			return r, true
		}
	}
	return httpExport{}, false
}

func startHTTPCollector(t *testing.T, tlsCert *tls.Certificate) (*httpCollector, string) {
	t.Helper()
	c := &httpCollector{}
	srv := httptest.NewUnstartedServer(c)
	if tlsCert != nil {
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{*tlsCert}, MinVersion: tls.VersionTLS12}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return c, srv.Listener.Addr().String()
}

func TestExportToLoopbackHTTPCollector(t *testing.T) {
	// A header the exporter takes from the environment, as it does for
	// gRPC: an API key is usually passed this way.
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-custody-test=from-env")
	for _, c := range []struct {
		name     string
		cfg      func(addr string) Config
		wantPath string
		wantType string
	}{
		{"http/protobuf, base endpoint: /v1/traces appended", func(a string) Config {
			return Config{OTLPEndpoint: "http://" + a, OTLPProtocol: ProtocolHTTPProtobuf}
		}, "/v1/traces", "application/x-protobuf"},
		{"base endpoint with a path", func(a string) Config {
			return Config{OTLPEndpoint: "http://" + a + "/otel/", OTLPProtocol: ProtocolHTTPProtobuf}
		}, "/otel/v1/traces", "application/x-protobuf"},
		{"per-signal endpoint used as it is", func(a string) Config {
			return Config{OTLPEndpoint: "http://" + a + "/custom/spans", OTLPProtocol: ProtocolHTTPProtobuf, OTLPSignalEndpoint: true}
		}, "/custom/spans", "application/x-protobuf"},
		{"host:port with insecure", func(a string) Config {
			return Config{OTLPEndpoint: a, OTLPProtocol: ProtocolHTTPProtobuf, OTLPInsecure: true}
		}, "/v1/traces", "application/x-protobuf"},
		{"http/json", func(a string) Config {
			return Config{OTLPEndpoint: "http://" + a, OTLPProtocol: ProtocolHTTPJSON}
		}, "/v1/traces", "application/json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The exporter reads the protocol variables itself: the
			// configured protocol must win over them.
			other := ProtocolHTTPJSON
			if c.wantType == "application/json" {
				other = ProtocolHTTPProtobuf
			}
			t.Setenv(EnvOTLPTracesProtocol, other)
			col, addr := startHTTPCollector(t, nil)
			cfg := c.cfg(addr)
			cfg.Service = "publisher"
			if err := exportOne(t, cfg, "span-"+c.wantPath); err != nil {
				t.Fatal(err)
			}
			got, ok := col.find("span-" + c.wantPath)
			if !ok {
				t.Fatalf("the span did not arrive: %+v", col.requests)
			}
			if got.Path != c.wantPath || got.ContentType != c.wantType || got.Header != "from-env" || got.Spans["span-"+c.wantPath] != "publisher" {
				t.Fatalf("export %+v; want path %s, content type %s, header from-env, service publisher", got, c.wantPath, c.wantType)
			}
		})
	}

	t.Run("https URL is TLS", func(t *testing.T) {
		ca, err := devca.NewHTTPS("otlp http test", time.Hour)
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
		col, addr := startHTTPCollector(t, &cert)
		caFile := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", caFile)
		// https wins over an insecure setting in the environment.
		t.Setenv(EnvOTLPInsecure, "true")
		if err := exportOne(t, Config{Service: "edge", OTLPEndpoint: "https://" + addr, OTLPProtocol: ProtocolHTTPProtobuf}, "tls"); err != nil {
			t.Fatal(err)
		}
		if got, ok := col.find("tls"); !ok || got.Path != "/v1/traces" || got.Spans["tls"] != "edge" {
			t.Fatalf("TLS export: %+v, %v", got, ok)
		}
		// The same TLS receiver named with http:// is not reached.
		_ = exportWithin(t, Config{Service: "edge", OTLPEndpoint: "http://" + addr, OTLPProtocol: ProtocolHTTPProtobuf}, "not-tls", 2*time.Second)
		if _, ok := col.find("not-tls"); ok {
			t.Fatal("the TLS receiver decoded a plaintext export")
		}
	})

	t.Run("no protocol is grpc: an OTLP/HTTP receiver gets nothing", func(t *testing.T) {
		t.Setenv(EnvOTLPTracesProtocol, "")
		col, addr := startHTTPCollector(t, nil)
		var logs bytes.Buffer
		tel, err := New(context.Background(), Config{Service: "signer", OTLPEndpoint: "http://" + addr,
			Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"default", "again"} {
			_, span := tel.TracerProvider.Tracer("test").Start(context.Background(), name)
			span.End()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = tel.TracerProvider.(*sdktrace.TracerProvider).ForceFlush(ctx)
			cancel()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = tel.Shutdown(ctx)
		if _, ok := col.find("default"); ok {
			t.Fatal("the default protocol sent OTLP/HTTP")
		}
		// The loss is not silent: counted, and logged once with the hint.
		if n := counterValue(t, tel.Registry, "custody_trace_export_failures_total"); n < 2 {
			t.Errorf("custody_trace_export_failures_total = %v, want at least 2", n)
		}
		if got := strings.Count(logs.String(), "spans could not be exported"); got != 1 || !strings.Contains(logs.String(), "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf") {
			t.Errorf("log reported the failure %d times (want once, with the protocol hint): %s", got, logs.String())
		}
		if strings.Contains(logs.String(), "from-env") {
			t.Errorf("the log holds a header value: %s", logs.String())
		}
	})
}

// The CLI-facing path through the environment: the protocol and a
// per-signal endpoint from OTEL_EXPORTER_OTLP_TRACES_* reach the receiver
// at the path as given.
func TestOTLPHTTPFromEnvironment(t *testing.T) {
	col, addr := startHTTPCollector(t, nil)
	env := map[string]string{
		EnvOTLPTracesEndpoint: "http://" + addr + "/ingest",
		EnvOTLPProtocol:       ProtocolHTTPProtobuf,
	}
	get := func(k string) string { return env[k] }
	endpoint, variable := OTLPEndpointFromEnv(get)
	proto, err := OTLPProtocolFromEnv(get)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Service: "custody", OTLPEndpoint: endpoint, OTLPProtocol: proto, OTLPSignalEndpoint: variable == EnvOTLPTracesEndpoint}
	if err := exportOne(t, cfg, "from-env"); err != nil {
		t.Fatal(err)
	}
	got, ok := col.find("from-env")
	if !ok || got.Path != "/ingest" || !strings.HasPrefix(got.ContentType, "application/x-protobuf") {
		t.Fatalf("export %+v, %v; want /ingest as protobuf", got, ok)
	}
}

// counterValue returns the value of the one counter named name.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
