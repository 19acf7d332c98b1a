package command

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	tests := []struct {
		in                    string
		name, version, digest string
		bad                   bool
	}{
		{in: "app@1.0.0", name: "app", version: "1.0.0"},
		{in: "team/app@1.0.0+build.1", name: "team/app", version: "1.0.0+build.1"},
		{in: "sha256:" + strings.Repeat("ab", 32), digest: "sha256:" + strings.Repeat("ab", 32)},
		{in: "sha256:abc", bad: true}, // refused here, not by the server after a round trip
		{in: "sha256:" + strings.Repeat("AB", 32), bad: true},
		{in: "app", bad: true},
		{in: "@1", bad: true},
		{in: "app@", bad: true},
	}
	for _, tt := range tests {
		n, v, d, err := parseRef(tt.in)
		if (err != nil) != tt.bad || n != tt.name || v != tt.version || d != tt.digest {
			t.Errorf("parseRef(%q) = %q %q %q %v", tt.in, n, v, d, err)
		}
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	var out, errOut bytes.Buffer
	getenv := func(string) string { return "" }
	if code := Execute(t.Context(), []string{"admit", "app@1"}, getenv, &out, &errOut); code != ExitError {
		t.Errorf("admit without --env: exit %d, want %d", code, ExitError)
	}
	errOut.Reset()
	if code := Execute(t.Context(), []string{"admit", "app@1", "--env", "prod"}, getenv, &out, &errOut); code != ExitError || !strings.Contains(errOut.String(), "--dev-dir") {
		t.Errorf("admit without a stack: exit %d, %q; want a hint about --dev-dir", code, errOut.String())
	}
}

// The CLI reads the standard OpenTelemetry endpoint variables; a bad one
// stops it before it does anything, naming the variable.
func TestBadOTLPEndpointExitsTwo(t *testing.T) {
	var out, errOut bytes.Buffer
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/v1/traces"}
	getenv := func(k string) string { return env[k] }
	if code := Execute(t.Context(), []string{"admit", "app@1", "--env", "prod"}, getenv, &out, &errOut); code != ExitError ||
		!strings.Contains(errOut.String(), "OTEL_EXPORTER_OTLP_ENDPOINT") || !strings.Contains(errOut.String(), "no path") {
		t.Errorf("exit %d, %q; want 2 and the variable named", code, errOut.String())
	}
	errOut.Reset()
	env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "https://user:s3cret@collector:4317"
	if code := Execute(t.Context(), []string{"admit", "app@1", "--env", "prod"}, getenv, &out, &errOut); code != ExitError ||
		!strings.Contains(errOut.String(), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || strings.Contains(errOut.String(), "s3cret") {
		t.Errorf("exit %d, %q; want 2, the traces variable named and no password", code, errOut.String())
	}
	errOut.Reset()
	env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://127.0.0.1:4317"
	env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/thrift"
	if code := Execute(t.Context(), []string{"admit", "app@1", "--env", "prod"}, getenv, &out, &errOut); code != ExitError ||
		!strings.Contains(errOut.String(), "OTEL_EXPORTER_OTLP_PROTOCOL") || !strings.Contains(errOut.String(), "want grpc, http/protobuf or http/json") {
		t.Errorf("http/thrift: exit %d, %q; want 2 and the protocols named", code, errOut.String())
	}
	// OTLP/HTTP is accepted, with the per-signal endpoint's path as it is.
	env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
	env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://127.0.0.1:4318/v1/traces"
	errOut.Reset()
	if code := Execute(t.Context(), []string{"admit", "app@1", "--env", "prod"}, getenv, &out, &errOut); code != ExitError || !strings.Contains(errOut.String(), "--dev-dir") {
		t.Errorf("http/protobuf: exit %d, %q; want the usual hint about --dev-dir", code, errOut.String())
	}
	delete(env, "OTEL_EXPORTER_OTLP_PROTOCOL")
	env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://127.0.0.1:4317"
	errOut.Reset()
	if code := Execute(t.Context(), []string{"admit", "app@1", "--env", "prod"}, getenv, &out, &errOut); code != ExitError || !strings.Contains(errOut.String(), "--dev-dir") {
		t.Errorf("a good endpoint: exit %d, %q; want the usual hint about --dev-dir", code, errOut.String())
	}
}
