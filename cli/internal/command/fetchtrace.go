package command

import (
	"io"
	"net/http"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/custody-dev/custody/libs/telemetry"
)

// tracedTransport makes each request to an edge a client span of the
// fetch's trace and sends that span as the W3C traceparent header, so the
// edge's span is its child. The span records the URL's path, never its
// query (the token is there; decision 0091), and no header but Range.
// otelhttp's transport is not used: it records url.full, query included.
type tracedTransport struct {
	base http.RoundTripper
	tel  *telemetry.Telemetry
}

func (t tracedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", req.Method),
		attribute.String("url.scheme", req.URL.Scheme),
		attribute.String("url.path", req.URL.Path),
		attribute.String("server.address", req.URL.Hostname()),
	}
	if p, err := strconv.Atoi(req.URL.Port()); err == nil {
		attrs = append(attrs, attribute.Int("server.port", p))
	}
	if rg := req.Header.Get("Range"); rg != "" {
		attrs = append(attrs, attribute.String("http.request.header.range", rg))
	}
	ctx, span := t.tel.TracerProvider.Tracer("custody/cli/fetch").Start(req.Context(), req.Method,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	req = req.Clone(ctx) // a RoundTripper must not change the caller's request
	t.tel.Propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		span.SetStatus(codes.Error, "request failed")
		span.End()
		return nil, err
	}
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode >= 400 {
		span.SetStatus(codes.Error, http.StatusText(resp.StatusCode))
	}
	// The span lasts until the body is read and closed: the transfer.
	resp.Body = &spanBody{ReadCloser: resp.Body, span: span}
	return resp, nil
}

type spanBody struct {
	io.ReadCloser
	span trace.Span
	n    int64
	once sync.Once
}

func (b *spanBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *spanBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() {
		b.span.SetAttributes(attribute.Int64("custody.bytes_received", b.n))
		b.span.End()
	})
	return err
}
