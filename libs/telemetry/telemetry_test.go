package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
)

// A process that exports no spans still passes the caller's trace on: the
// span it starts for an incoming call carries the caller's trace ID, and the
// context it injects into an outgoing call names that trace.
func TestNoExporterKeepsTheTrace(t *testing.T) {
	tel := Discard("test")
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	in := propagation.MapCarrier{"traceparent": parent}
	ctx := tel.Propagator.Extract(context.Background(), in)
	ctx, span := tel.TracerProvider.Tracer("test").Start(ctx, "call")
	defer span.End()
	if got := span.SpanContext().TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("span trace ID %s, want the caller's", got)
	}
	out := propagation.MapCarrier{}
	tel.Propagator.Inject(ctx, out)
	if out["traceparent"] == "" || out["traceparent"][3:35] != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("outgoing traceparent %q does not name the caller's trace", out["traceparent"])
	}
}
