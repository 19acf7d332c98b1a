package command

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/custody-dev/custody/libs/telemetry"
)

// Each edge request carries the fetch's trace in traceparent and is a
// client span of it that records the path but never the token.
func TestEdgeRequestsCarryTheTraceNotTheToken(t *testing.T) {
	var got []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("traceparent"))
		_, _ = io.WriteString(w, "blob")
	}))
	defer srv.Close()
	rec := tracetest.NewSpanRecorder()
	tel := telemetry.Discard("custody")
	tel.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	client := newFetchClient(tracedTransport{tel: tel, base: srv.Client().Transport})

	ctx, root := tel.TracerProvider.Tracer("t").Start(context.Background(), "custody fetch")
	const secret = "v1.c2VjcmV0LXRva2Vu.sig"
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/blobs/sha256/ab?token="+secret, nil)
	req.Header.Set("Range", "bytes=4-")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if req.Header.Get("traceparent") != "" {
		t.Error("the caller's request was changed")
	}
	if len(rec.Ended()) != 0 {
		t.Error("the request's span ended before its body was read")
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	root.End()

	if len(got) != 1 || !strings.Contains(got[0], root.SpanContext().TraceID().String()) {
		t.Fatalf("edge saw traceparent %q, want the fetch's trace %s", got, root.SpanContext().TraceID())
	}
	var reqSpan sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == http.MethodGet {
			reqSpan = s
		}
		for _, a := range s.Attributes() {
			if strings.Contains(a.Value.Emit(), secret) || strings.Contains(a.Value.Emit(), "token=") {
				t.Errorf("span %q attribute %s holds the token: %s", s.Name(), a.Key, a.Value.Emit())
			}
		}
	}
	if reqSpan == nil || reqSpan.Parent().SpanID() != root.SpanContext().SpanID() {
		t.Fatalf("no request span under the root span")
	}
	if !strings.Contains(got[0], reqSpan.SpanContext().SpanID().String()) {
		t.Errorf("traceparent %q does not name the request's span %s", got[0], reqSpan.SpanContext().SpanID())
	}
	attrs := map[string]string{}
	for _, a := range reqSpan.Attributes() {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	if attrs["url.path"] != "/v1/blobs/sha256/ab" || attrs["http.response.status_code"] != "200" || attrs["custody.bytes_received"] != "4" || attrs["http.request.header.range"] != "bytes=4-" {
		t.Errorf("request span attributes: %v", attrs)
	}
}
