// Package telemetry sets up OpenTelemetry tracing and the Prometheus metrics
// every Custody process exports.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Config says where spans go.
type Config struct {
	// Service is the service name recorded on every span.
	Service string
	// TraceFile, if set, receives every span as a line of JSON.
	TraceFile string
	// OTLPEndpoint, if set, receives spans over OTLP: http://host:port
	// (plaintext), https://host:port (TLS) or host:port (TLS unless
	// OTLPInsecure), with a path for OTLP/HTTP; see ParseOTLPEndpoint.
	OTLPEndpoint string
	// OTLPProtocol is grpc, http/protobuf or http/json ("" is
	// DefaultOTLPProtocol, grpc).
	OTLPProtocol string
	// OTLPInsecure makes a host:port endpoint plaintext; a URL's scheme
	// decides for itself.
	OTLPInsecure bool
	// OTLPSignalEndpoint says OTLPEndpoint came from
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: over OTLP/HTTP its path is used
	// as it is, with no /v1/traces appended.
	OTLPSignalEndpoint bool
	// Logger, if set, is told when spans fail to reach the OTLP endpoint
	// (the first failure, then at most once a minute); every failure is
	// counted in custody_trace_export_failures_total either way.
	Logger *slog.Logger
}

// Telemetry holds the tracer provider, propagator and metrics of one process.
type Telemetry struct {
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	Registry       *prometheus.Registry
	Metrics        *Metrics

	shutdown []func(context.Context) error
}

// Metrics are the counters shared by every service. Services may register
// their own on Registry.
type Metrics struct {
	// RPCs counts finished RPCs by full method and status code.
	RPCs *prometheus.CounterVec
	// AuthzDenied counts calls refused by authorization, by method.
	AuthzDenied *prometheus.CounterVec
	// SignatureFailures counts signatures that failed to verify, by what was
	// being verified (envelope, checkpoint, token, decision).
	SignatureFailures *prometheus.CounterVec
	// IntegrityFailures counts bytes that did not match their digest, by
	// where they were found (store, edge-cache, origin, download).
	IntegrityFailures *prometheus.CounterVec
}

// New sets up tracing and metrics. Call Shutdown to flush spans.
func New(ctx context.Context, cfg Config) (*Telemetry, error) {
	var target OTLPTarget
	if cfg.OTLPEndpoint != "" {
		var err error
		if target, err = ParseOTLPEndpoint(cfg.OTLPEndpoint, cfg.otlpSettings()); err != nil {
			return nil, err
		}
	}
	t := &Telemetry{
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Registry:   prometheus.NewRegistry(),
	}
	t.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	t.Metrics = newMetrics(t.Registry, cfg.Service)
	if cfg.TraceFile == "" && cfg.OTLPEndpoint == "" {
		// No exporter: recording spans nobody reads cost about a tenth of
		// the catalog's CPU per event (decision 0068). A no-op provider
		// still carries the caller's trace context through to outgoing
		// calls, so traces stay linked across a process that exports none.
		t.TracerProvider = noop.NewTracerProvider()
		return t, nil
	}

	res := resource.NewSchemaless(semconv.ServiceName(cfg.Service))
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if cfg.TraceFile != "" {
		f, err := os.OpenFile(cfg.TraceFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open trace file: %w", err)
		}
		exp, err := stdouttrace.New(stdouttrace.WithWriter(f))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("create trace file exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
		t.shutdown = append(t.shutdown, closer(f))
	}
	if cfg.OTLPEndpoint != "" {
		var exp sdktrace.SpanExporter
		var err error
		if target.Protocol == ProtocolGRPC {
			exp, err = otlptracegrpc.New(ctx, target.grpcOptions()...)
		} else {
			exp, err = otlptracehttp.New(ctx, target.httpOptions()...)
		}
		if err != nil {
			_ = t.Shutdown(ctx)
			return nil, fmt.Errorf("create OTLP exporter (%s) for %s: %w", target.Protocol, target.HostPort, err)
		}
		opts = append(opts, sdktrace.WithBatcher(newReportingExporter(exp, target, t.Registry, cfg)))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	// The provider flushes its exporters first, then the trace file closes.
	t.shutdown = append([]func(context.Context) error{tp.Shutdown}, t.shutdown...)
	t.TracerProvider = tp
	return t, nil
}

// reportingExporter counts and reports the exports that fail: the SDK's
// batcher hands an exporter's error only to OpenTelemetry's global error
// handler, so a wrong endpoint or protocol (an OTLP/HTTP collector on 4318
// with the default grpc) would otherwise lose every span without a word.
type reportingExporter struct {
	sdktrace.SpanExporter
	failures prometheus.Counter
	logger   *slog.Logger
	target   OTLPTarget

	mu     sync.Mutex
	logged time.Time
}

// reportEvery is the least time between two log lines about failed exports.
const reportEvery = time.Minute

func newReportingExporter(exp sdktrace.SpanExporter, target OTLPTarget, reg prometheus.Registerer, cfg Config) *reportingExporter {
	r := &reportingExporter{SpanExporter: exp, logger: cfg.Logger, target: target,
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "custody_trace_export_failures_total",
			Help:        "Batches of spans the OTLP exporter failed to deliver (endpoint down, wrong protocol or TLS setting).",
			ConstLabels: prometheus.Labels{"service": cfg.Service},
		})}
	reg.MustRegister(r.failures)
	return r
}

// ExportSpans exports and reports a failure.
func (r *reportingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := r.SpanExporter.ExportSpans(ctx, spans)
	if err == nil {
		return nil
	}
	r.failures.Inc()
	if r.logger == nil {
		return err
	}
	r.mu.Lock()
	now := time.Now()
	report := r.logged.IsZero() || now.Sub(r.logged) >= reportEvery
	if report {
		r.logged = now
	}
	r.mu.Unlock()
	if report {
		hint := "check that the collector is up"
		if r.target.Protocol == ProtocolGRPC {
			hint += "; a collector that takes OTLP/HTTP (port 4318) needs OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf or --otlp-protocol http/protobuf"
		}
		r.logger.WarnContext(ctx, "spans could not be exported: "+hint+" (reported at most once a minute; counted in custody_trace_export_failures_total)",
			slog.String("protocol", r.target.Protocol), slog.String("endpoint", r.target.HostPort+r.target.Path), slog.Int("spans", len(spans)), slog.Any("error", err))
	}
	return err
}

func (cfg Config) otlpSettings() OTLPSettings {
	return OTLPSettings{Protocol: cfg.OTLPProtocol, Insecure: cfg.OTLPInsecure, Signal: cfg.OTLPSignalEndpoint}
}

func closer(c io.Closer) func(context.Context) error {
	return func(context.Context) error { return c.Close() }
}

func newMetrics(reg prometheus.Registerer, service string) *Metrics {
	constLabels := prometheus.Labels{"service": service}
	m := &Metrics{
		RPCs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custody_rpc_requests_total", Help: "Finished RPCs by method and status code.", ConstLabels: constLabels,
		}, []string{"method", "code"}),
		AuthzDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custody_authz_denied_total", Help: "Calls refused by SPIFFE ID authorization, by method.", ConstLabels: constLabels,
		}, []string{"method"}),
		SignatureFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custody_signature_verification_failures_total", Help: "Signatures that failed to verify, by kind.", ConstLabels: constLabels,
		}, []string{"kind"}),
		IntegrityFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custody_integrity_failures_total", Help: "Bytes that did not match their digest, by where.", ConstLabels: constLabels,
		}, []string{"where"}),
	}
	reg.MustRegister(m.RPCs, m.AuthzDenied, m.SignatureFailures, m.IntegrityFailures)
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (t *Telemetry) Handler() http.Handler {
	return promhttp.HandlerFor(t.Registry, promhttp.HandlerOpts{Registry: t.Registry})
}

// Shutdown flushes pending spans and closes exporters.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

// Discard returns telemetry that records metrics in a private registry and
// exports no spans, for tests.
func Discard(service string) *Telemetry {
	t, err := New(context.Background(), Config{Service: service})
	if err != nil {
		panic(err) // unreachable: no exporters to fail
	}
	return t
}
