package telemetry

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
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

// The OTLP protocols (OTEL_EXPORTER_OTLP_PROTOCOL's values).
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
	ProtocolHTTPJSON     = "http/json"
)

// DefaultOTLPProtocol is the protocol when none is named: grpc, the only
// one Custody spoke before OTLP/HTTP, so that an endpoint set up for it
// keeps working (decision 0107). The OpenTelemetry specification's
// default is http/protobuf, with this exception for SDKs that already
// shipped grpc as their default.
const DefaultOTLPProtocol = ProtocolGRPC

// OTLPTracesPath is the path of OTLP/HTTP trace exports, appended to a
// base endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, --otlp-endpoint).
const OTLPTracesPath = "/v1/traces"

// CheckOTLPProtocol returns nil for a protocol Custody's exporters speak
// (grpc, http/protobuf, http/json; "" is the default) and otherwise an
// error that lists them.
func CheckOTLPProtocol(p string) error {
	switch p {
	case "", ProtocolGRPC, ProtocolHTTPProtobuf, ProtocolHTTPJSON:
		return nil
	}
	return fmt.Errorf("OTLP protocol %q: want grpc, http/protobuf or http/json", p)
}

// OTLPProtocolFromEnv returns the OTLP protocol the OpenTelemetry
// environment names for traces (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else
// OTEL_EXPORTER_OTLP_PROTOCOL; "" when neither is set, which means
// DefaultOTLPProtocol) and an error naming the variable of a value no
// exporter here speaks.
func OTLPProtocolFromEnv(getenv func(string) string) (string, error) {
	for _, k := range []string{EnvOTLPTracesProtocol, EnvOTLPProtocol} {
		v := strings.TrimSpace(getenv(k))
		if v == "" {
			continue
		}
		if err := CheckOTLPProtocol(v); err != nil {
			return "", fmt.Errorf("%s=%q: want grpc, http/protobuf or http/json", k, v)
		}
		return v, nil
	}
	return "", nil
}

// OTLPSettings say how to read an OTLP endpoint.
type OTLPSettings struct {
	// Protocol is grpc, http/protobuf or http/json ("" is
	// DefaultOTLPProtocol).
	Protocol string
	// Insecure makes an endpoint written host:port plaintext; a URL's
	// scheme decides for itself.
	Insecure bool
	// Signal is true for a per-signal endpoint
	// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): over OTLP/HTTP its path is
	// used as it is ("/" when it has none) instead of having /v1/traces
	// appended. gRPC has no path either way.
	Signal bool
}

// OTLPTarget is a parsed OTLP endpoint.
type OTLPTarget struct {
	// Protocol is grpc, http/protobuf or http/json.
	Protocol string
	// HostPort is what the exporter dials.
	HostPort string
	// Insecure is true for a plaintext connection (an http:// URL, or a
	// host:port with the insecure setting on).
	Insecure bool
	// Path is where OTLP/HTTP exports are posted, from "/"; "" for gRPC.
	Path string
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

// ParseOTLPEndpoint parses an OTLP endpoint in the form the
// OpenTelemetry specification defines for OTEL_EXPORTER_OTLP_ENDPOINT:
// http://host[:port][/path] is a plaintext connection and
// https://host[:port][/path] a TLS one whatever the insecure setting says;
// a URL without a port means the scheme's (80, 443). The form host:port
// (the --otlp-endpoint flag's since the start) is TLS unless s.Insecure.
//
// Over gRPC an endpoint has no path: a path is an error rather than
// silently dropped, since it means an OTLP/HTTP collector. Over OTLP/HTTP
// the path of a base endpoint gets /v1/traces appended (http://c:4318 and
// http://c:4318/ post to /v1/traces, http://c:4318/otel to
// /otel/v1/traces); a per-signal one (s.Signal) is used as it is, "/"
// when it has none. A query, a fragment or user information is an error
// for both. Errors never repeat user information.
func ParseOTLPEndpoint(raw string, s OTLPSettings) (OTLPTarget, error) {
	proto := s.Protocol
	if proto == "" {
		proto = DefaultOTLPProtocol
	}
	if err := CheckOTLPProtocol(proto); err != nil {
		return OTLPTarget{}, err
	}
	httpProto := proto != ProtocolGRPC
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
		t := OTLPTarget{Protocol: proto, HostPort: raw, Insecure: s.Insecure}
		if httpProto {
			t.Path = httpPath("", s.Signal)
		}
		return t, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return OTLPTarget{}, errors.New("OTLP endpoint: not a URL (want http://host:port or https://host:port)")
	}
	shown := u.Redacted()
	if u.User != nil {
		return OTLPTarget{}, fmt.Errorf("OTLP endpoint %q: user information in the URL is not supported (use OTEL_EXPORTER_OTLP_HEADERS)", shown)
	}
	t := OTLPTarget{Protocol: proto}
	var defPort string
	switch strings.ToLower(u.Scheme) {
	case "http":
		t.Insecure, defPort = true, "80"
	case "https":
		t.Insecure, defPort = false, "443"
	default:
		return OTLPTarget{}, fmt.Errorf("OTLP endpoint %q: scheme %q: want http or https", shown, u.Scheme)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || u.ForceQuery {
		return OTLPTarget{}, fmt.Errorf("OTLP endpoint %q: an OTLP endpoint takes no query or fragment", shown)
	}
	if httpProto {
		if strings.ContainsFunc(u.Path, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return OTLPTarget{}, fmt.Errorf("OTLP endpoint %q: the path holds spaces or control characters", shown)
		}
		t.Path = httpPath(u.Path, s.Signal)
	} else if u.Path != "" && u.Path != "/" {
		return OTLPTarget{}, fmt.Errorf("OTLP endpoint %q: OTLP/gRPC takes no path (%q is an OTLP/HTTP form: set %s=http/protobuf)", shown, u.Path, EnvOTLPProtocol)
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

// httpPath is the specification's rule for where OTLP/HTTP exports go: a
// base endpoint's path with /v1/traces appended, a per-signal one's as it
// is (the root when empty).
func httpPath(p string, signal bool) string {
	if signal {
		if p == "" {
			return "/"
		}
		return p
	}
	return strings.TrimSuffix(p, "/") + OTLPTracesPath
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

// grpcOptions are the otlptracegrpc options for t. The endpoint and its
// security are set explicitly so they win over what the exporter reads
// from the environment itself; the other OTEL_EXPORTER_OTLP_* settings
// (headers, certificate, timeout, compression) still apply.
func (t OTLPTarget) grpcOptions() []otlptracegrpc.Option {
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

// httpOptions are the otlptracehttp options for t, explicit for the same
// reason: WithEndpointURL sets the host and the security (the scheme),
// WithURLPath the path (set apart so that the parsed path is not parsed
// again), WithEncoding the body's format (the exporter reads the protocol
// variables too and must not disagree with ours). Headers, certificate,
// timeout and compression come from the environment.
func (t OTLPTarget) httpOptions() []otlptracehttp.Option {
	scheme := "https"
	if t.Insecure {
		scheme = "http"
	}
	enc := otlptracehttp.EncodingProtobuf
	if t.Protocol == ProtocolHTTPJSON {
		enc = otlptracehttp.EncodingJSON
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(scheme + "://" + t.HostPort), otlptracehttp.WithURLPath(t.Path), otlptracehttp.WithEncoding(enc)}
	if t.Insecure {
		// An OTEL_EXPORTER_OTLP_CERTIFICATE in the environment sets a TLS
		// configuration, with which the exporter refuses an http://
		// endpoint at start-up; the scheme decides, as for gRPC.
		opts = append(opts, otlptracehttp.WithTLSClientConfig(nil))
	}
	return opts
}
