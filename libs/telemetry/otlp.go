package telemetry

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The OpenTelemetry environment variables that say where spans go over
// OTLP. The traces-specific one wins over the general one.
const (
	EnvOTLPTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvOTLPEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvOTLPTracesInsecure = "OTEL_EXPORTER_OTLP_TRACES_INSECURE"
	EnvOTLPInsecure       = "OTEL_EXPORTER_OTLP_INSECURE"
	EnvOTLPTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	EnvOTLPProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
)

// CheckOTLPProtocol refuses an OpenTelemetry environment that asks for an
// OTLP protocol other than grpc (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else
// OTEL_EXPORTER_OTLP_PROTOCOL; unset is grpc here): Custody's exporter
// speaks only OTLP/gRPC, and sending it to an http/protobuf collector
// would lose every span without a word.
func CheckOTLPProtocol(getenv func(string) string) error {
	for _, k := range []string{EnvOTLPTracesProtocol, EnvOTLPProtocol} {
		v := strings.TrimSpace(getenv(k))
		if v == "" {
			continue
		}
		if v != "grpc" {
			return fmt.Errorf("%s=%q: only grpc is supported", k, v)
		}
		return nil
	}
	return nil
}

// OTLPTarget is a parsed OTLP/gRPC endpoint.
type OTLPTarget struct {
	// HostPort is what the exporter dials.
	HostPort string
	// Insecure is true for a plaintext connection (an http:// URL, or a
	// host:port with the insecure setting on).
	Insecure bool
}

// OTLPEndpointFromEnv returns the endpoint the OpenTelemetry environment
// names for traces and the variable it came from ("" if neither is set).
func OTLPEndpointFromEnv(getenv func(string) string) (value, variable string) {
	for _, k := range []string{EnvOTLPTracesEndpoint, EnvOTLPEndpoint} {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v, k
		}
	}
	return "", ""
}

// OTLPInsecureFromEnv reads OTEL_EXPORTER_OTLP_TRACES_INSECURE, else
// OTEL_EXPORTER_OTLP_INSECURE ("true" or "false", any case; unset is
// false). It applies only to an endpoint written host:port.
func OTLPInsecureFromEnv(getenv func(string) string) (bool, error) {
	for _, k := range []string{EnvOTLPTracesInsecure, EnvOTLPInsecure} {
		v := strings.TrimSpace(getenv(k))
		if v == "" {
			continue
		}
		switch strings.ToLower(v) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return false, fmt.Errorf("%s=%q: want true or false", k, v)
	}
	return false, nil
}

// ParseOTLPEndpoint parses an OTLP/gRPC endpoint in the form the
// OpenTelemetry specification defines for OTEL_EXPORTER_OTLP_ENDPOINT:
// http://host[:port] is a plaintext connection and https://host[:port] a
// TLS one whatever the insecure setting says; a URL without a port means
// the scheme's (80, 443). The form host:port (the --otlp-endpoint flag's
// since the start) is TLS unless insecure is true. gRPC has no use for a
// path, a query, a fragment or user information, so each is an error
// rather than silently dropped: a URL ending in /v1/traces is an
// OTLP/HTTP endpoint, which this exporter does not speak. Errors never
// repeat user information.
func ParseOTLPEndpoint(raw string, insecure bool) (OTLPTarget, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return OTLPTarget{}, errors.New("empty OTLP endpoint")
	}
	if !strings.Contains(raw, "://") {
		if strings.Contains(raw, "@") {
			// Not echoed: it may hold a password.
			return OTLPTarget{}, errors.New("OTLP endpoint: user information is not supported (use OTEL_EXPORTER_OTLP_HEADERS)")
		}
		if err := checkHostPort(raw); err != nil {
			return OTLPTarget{}, fmt.Errorf("OTLP endpoint %q: %w (want http://host:port, https://host:port or host:port)", raw, err)
		}
		return OTLPTarget{HostPort: raw, Insecure: insecure}, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return OTLPTarget{}, errors.New("OTLP endpoint: not a URL (want http://host:port or https://host:port)")
	}
	shown := u.Redacted()
	if u.User != nil {
		return OTLPTarget{}, fmt.Errorf("OTLP endpoint %q: user information in the URL is not supported (use OTEL_EXPORTER_OTLP_HEADERS)", shown)
	}
	var t OTLPTarget
	var defPort string
	switch strings.ToLower(u.Scheme) {
	case "http":
		t.Insecure, defPort = true, "80"
	case "https":
		t.Insecure, defPort = false, "443"
	default:
		return OTLPTarget{}, fmt.Errorf("OTLP endpoint %q: scheme %q: want http or https", shown, u.Scheme)
	}
	if u.Path != "" && u.Path != "/" {
		return OTLPTarget{}, fmt.Errorf("OTLP endpoint %q: OTLP/gRPC takes no path (%q is an OTLP/HTTP form?)", shown, u.Path)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return OTLPTarget{}, fmt.Errorf("OTLP endpoint %q: OTLP/gRPC takes no query or fragment", shown)
	}
	if u.Hostname() == "" {
		return OTLPTarget{}, fmt.Errorf("OTLP endpoint %q: no host", shown)
	}
	t.HostPort = u.Host
	if u.Port() == "" {
		if strings.HasSuffix(u.Host, ":") {
			return OTLPTarget{}, fmt.Errorf("OTLP endpoint %q: empty port", shown)
		}
		t.HostPort = net.JoinHostPort(u.Hostname(), defPort)
	}
	if err := checkHostPort(t.HostPort); err != nil {
		return OTLPTarget{}, fmt.Errorf("OTLP endpoint %q: %w", shown, err)
	}
	return t, nil
}

func checkHostPort(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("no host")
	}
	if strings.ContainsAny(host, "/?#@ ") {
		return fmt.Errorf("host %q is not a host name or address", host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q: want 1 to 65535", port)
	}
	return nil
}

// exporterOptions are the otlptracegrpc options for t. The endpoint and
// its security are set explicitly so they win over what the exporter
// reads from the environment itself; the other OTEL_EXPORTER_OTLP_*
// settings (headers, certificate, timeout, compression) still apply.
func (t OTLPTarget) exporterOptions() []otlptracegrpc.Option {
	if t.Insecure {
		// Credentials, not WithInsecure: an OTEL_EXPORTER_OTLP_CERTIFICATE
		// in the environment sets TLS credentials, which the exporter
		// prefers over its insecure flag.
		return []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(t.HostPort), otlptracegrpc.WithTLSCredentials(insecure.NewCredentials())}
	}
	// WithEndpointURL with https is the one option that turns an
	// OTEL_EXPORTER_OTLP_INSECURE=true from the environment back off.
	return []otlptracegrpc.Option{otlptracegrpc.WithEndpointURL("https://" + t.HostPort)}
}
