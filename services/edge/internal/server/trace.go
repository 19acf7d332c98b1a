package server

import (
	"context"
	"net/http"
	"net/netip"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/custody-dev/custody/libs/telemetry"
)

var noopSpan = trace.SpanFromContext(context.Background())

// startServerSpan starts the span of one HTTP request, a child of the
// caller's traceparent header if it names a trace. Its attributes are
// chosen, not copied from the request: the URL's query carries the
// download token, so only the path is recorded (decision 0091), and no
// header is. client is the client clientAddr resolved (client.address, as
// the semantic conventions ask: the client behind any proxy), the socket
// peer is network.peer.address.
func startServerSpan(tel *telemetry.Telemetry, r *http.Request, client netip.Addr) (context.Context, trace.Span) {
	ctx := tel.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", method(r.Method)),
		attribute.String("url.path", r.URL.Path),
		attribute.String("url.scheme", "https"),
		attribute.String("network.protocol.version", strconv.Itoa(r.ProtoMajor)+"."+strconv.Itoa(r.ProtoMinor)),
	}
	if client.IsValid() {
		attrs = append(attrs, attribute.String("client.address", client.String()))
	}
	if peer, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		attrs = append(attrs, attribute.String("network.peer.address", peer.Addr().Unmap().String()), attribute.Int("network.peer.port", int(peer.Port())))
		if peer.Addr().Unmap() == client {
			attrs = append(attrs, attribute.Int("client.port", int(peer.Port())))
		}
	}
	if rg := r.Header.Get("Range"); rg != "" && len(rg) <= 64 {
		attrs = append(attrs, attribute.String("http.request.header.range", rg))
	}
	// The route, not the path: a span name stays low in cardinality.
	return tel.TracerProvider.Tracer("custody/edge/http").Start(ctx, method(r.Method)+" "+blobPrefix+"{hex}",
		trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
}

// endServerSpan records what the access log records, then ends span.
func endServerSpan(span trace.Span, rec *recorder) {
	if !span.IsRecording() {
		span.End()
		return
	}
	attrs := []attribute.KeyValue{
		attribute.Int("http.response.status_code", rec.status),
		attribute.Int64("http.response.body.size", rec.bytes),
	}
	if rec.digest != "" {
		attrs = append(attrs, attribute.String("custody.digest", rec.digest))
	}
	if rec.decisionID != "" {
		attrs = append(attrs, attribute.String("custody.decision_id", rec.decisionID))
	}
	if rec.refused != "" {
		attrs = append(attrs, attribute.String("custody.refused", rec.refused))
	}
	span.SetAttributes(attrs...)
	if rec.status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(rec.status))
	}
	span.End()
}

// method is r.Method if it is one the edge knows, else "_OTHER", as the
// HTTP semantic conventions say: a caller chooses the method.
func method(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions, http.MethodPatch, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "_OTHER"
}
