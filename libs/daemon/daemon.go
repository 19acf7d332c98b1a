package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
)

// Config is the part of a service's configuration that every service has.
type Config struct {
	// Service is the service's name, e.g. "signer"; set by the service.
	Service string

	TrustDomain     string
	SVIDDir         string
	WorkloadAPIAddr string
	Listen          string
	MetricsListen   string
	EndpointsFile   string
	TraceFile       string
	OTLPEndpoint    string
	// OTLPSignalEndpoint says OTLPEndpoint came from
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (not from the flag or the general
	// variable): over OTLP/HTTP its path is used as it is.
	OTLPSignalEndpoint bool
	// OTLPProtocol is grpc, http/protobuf or http/json ("" is grpc).
	OTLPProtocol string
	// OTLPInsecure makes a host:port OTLP endpoint plaintext.
	OTLPInsecure    bool
	LogLevel        string
	ShutdownTimeout time.Duration
}

// RegisterFlags adds the shared flags to f.
func (c *Config) RegisterFlags(f *Flags) {
	f.String(&c.TrustDomain, "trust-domain", "CUSTODY_TRUST_DOMAIN", "", "SPIFFE trust domain of this deployment")
	f.String(&c.SVIDDir, "svid-dir", "CUSTODY_SVID_DIR", "", "directory with svid.pem, svid_key.pem and bundle.pem; unused when SPIFFE_ENDPOINT_SOCKET is set")
	f.String(&c.WorkloadAPIAddr, "workload-api", identity.EndpointSocketEnv, "", "SPIFFE Workload API socket, e.g. unix:///run/spire/agent.sock")
	f.String(&c.Listen, "listen", "CUSTODY_LISTEN", "127.0.0.1:0", "gRPC listen address")
	f.String(&c.MetricsListen, "metrics-listen", "CUSTODY_METRICS_LISTEN", "127.0.0.1:0", "Prometheus /metrics listen address; empty disables it")
	f.String(&c.EndpointsFile, "endpoints-file", "CUSTODY_ENDPOINTS_FILE", "", "write the bound addresses here as JSON once listening")
	f.String(&c.TraceFile, "trace-file", "CUSTODY_TRACE_FILE", "", "append spans to this file as JSON lines")
	// The OpenTelemetry variables, traces-specific first; the flag wins
	// over both. A base endpoint (the flag, the general variable) gets
	// /v1/traces appended over OTLP/HTTP, the traces variable is used as
	// it is: the flag remembers which one it holds.
	endpoint, variable := telemetry.OTLPEndpointFromEnv(f.getenv)
	c.OTLPEndpoint, c.OTLPSignalEndpoint = endpoint, variable == telemetry.EnvOTLPTracesEndpoint
	f.Var(&otlpEndpointFlag{c: c}, "otlp-endpoint", "send spans over OTLP to http://host:port (plaintext), https://host:port (TLS) or host:port (TLS unless --otlp-insecure);"+
		" over OTLP/HTTP "+telemetry.OTLPTracesPath+" is appended to the URL's path (env "+telemetry.EnvOTLPTracesEndpoint+", used as it is, "+telemetry.EnvOTLPEndpoint+")")
	proto, err := telemetry.OTLPProtocolFromEnv(f.getenv)
	if err != nil {
		f.errs = append(f.errs, err)
	}
	f.StringVar(&c.OTLPProtocol, "otlp-protocol", proto, "OTLP protocol: grpc, http/protobuf or http/json (default grpc; env "+
		telemetry.EnvOTLPTracesProtocol+", "+telemetry.EnvOTLPProtocol+")")
	ins, err := telemetry.OTLPInsecureFromEnv(f.getenv)
	if err != nil {
		f.errs = append(f.errs, err)
	}
	f.BoolVar(&c.OTLPInsecure, "otlp-insecure", ins, "no TLS to a host:port --otlp-endpoint; a URL's scheme decides for itself (env "+
		telemetry.EnvOTLPTracesInsecure+", "+telemetry.EnvOTLPInsecure+")")
	f.String(&c.LogLevel, "log-level", "CUSTODY_LOG_LEVEL", "info", "debug, info, warn or error")
	f.Duration(&c.ShutdownTimeout, "shutdown-timeout", "CUSTODY_SHUTDOWN_TIMEOUT", 10*time.Second, "how long to drain RPCs on shutdown")
}

func (c *Config) otlpSettings() telemetry.OTLPSettings {
	return telemetry.OTLPSettings{Protocol: c.OTLPProtocol, Insecure: c.OTLPInsecure, Signal: c.OTLPSignalEndpoint}
}

// otlpEndpointFlag is --otlp-endpoint: a value given on the command line
// is a base endpoint, whatever variable the default came from.
type otlpEndpointFlag struct{ c *Config }

func (f *otlpEndpointFlag) String() string {
	if f == nil || f.c == nil {
		return ""
	}
	return f.c.OTLPEndpoint
}

func (f *otlpEndpointFlag) Set(v string) error {
	f.c.OTLPEndpoint, f.c.OTLPSignalEndpoint = v, false
	return nil
}

// Validate returns every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if c.TrustDomain == "" {
		errs = append(errs, errors.New("--trust-domain is required"))
	} else if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
		errs = append(errs, fmt.Errorf("--trust-domain %q: %w", c.TrustDomain, err))
	}
	if c.SVIDDir == "" && c.WorkloadAPIAddr == "" {
		errs = append(errs, errors.New("no identity: set --svid-dir or "+identity.EndpointSocketEnv))
	}
	if c.Listen == "" {
		errs = append(errs, errors.New("--listen is required"))
	}
	if c.OTLPEndpoint != "" {
		if _, err := telemetry.ParseOTLPEndpoint(c.OTLPEndpoint, c.otlpSettings()); err != nil {
			errs = append(errs, fmt.Errorf("--otlp-endpoint (or %s, %s): %w", telemetry.EnvOTLPTracesEndpoint, telemetry.EnvOTLPEndpoint, err))
		}
	}
	if err := telemetry.CheckOTLPProtocol(c.OTLPProtocol); err != nil {
		errs = append(errs, fmt.Errorf("--otlp-protocol (or %s, %s): %w", telemetry.EnvOTLPTracesProtocol, telemetry.EnvOTLPProtocol, err))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel))
	}
	return joinLines(errs)
}

// Daemon is a started service process: identity, telemetry and listeners.
type Daemon struct {
	Config      Config
	Logger      *slog.Logger
	Telemetry   *telemetry.Telemetry
	Source      identity.Source
	TrustDomain spiffeid.TrustDomain

	mu        sync.Mutex
	listeners map[string]net.Listener
	closeOnce sync.Once
}

// Close flushes telemetry and releases the identity source. It is safe to
// call more than once: Serve calls it, and a main defers it to cover the
// error paths before Serve.
func (d *Daemon) Close() {
	d.closeOnce.Do(func() {
		sctx, cancel := context.WithTimeout(context.Background(), d.Config.ShutdownTimeout)
		defer cancel()
		_ = d.Telemetry.Shutdown(sctx)
		d.Source.Close()
	})
}

// Start sets up logging to stderr, telemetry and identity. It fails if no
// SVID can be obtained.
func Start(ctx context.Context, cfg Config, stderr io.Writer) (*Daemon, error) {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel)) // checked by Validate
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl})).With(slog.String("service", cfg.Service))
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("trust domain: %w", err)
	}
	tel, err := telemetry.New(ctx, telemetry.Config{Service: cfg.Service, TraceFile: cfg.TraceFile, OTLPEndpoint: cfg.OTLPEndpoint, OTLPProtocol: cfg.OTLPProtocol,
		OTLPInsecure: cfg.OTLPInsecure, OTLPSignalEndpoint: cfg.OTLPSignalEndpoint, Logger: logger})
	if err != nil {
		return nil, err
	}
	src, err := identity.Open(ctx, identity.Config{WorkloadAPIAddr: cfg.WorkloadAPIAddr, Dir: cfg.SVIDDir, TrustDomain: td, Logger: logger})
	if err != nil {
		_ = tel.Shutdown(ctx)
		return nil, err
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		_ = tel.Shutdown(ctx)
		src.Close()
		return nil, fmt.Errorf("get own SVID: %w", err)
	}
	logger.Info("identity loaded", slog.String("id", svid.ID.String()), slog.Time("not_after", svid.Certificates[0].NotAfter))
	return &Daemon{Config: cfg, Logger: logger, Telemetry: tel, Source: src, TrustDomain: td, listeners: map[string]net.Listener{}}, nil
}

// ServiceID returns the SPIFFE ID of a Custody service in this trust domain,
// e.g. ServiceID("signer") is spiffe://<td>/service/signer.
func (d *Daemon) ServiceID(name string) spiffeid.ID {
	return spiffeid.RequireFromPath(d.TrustDomain, "/service/"+name)
}

// Dial connects to the Custody service name at target over SPIFFE mTLS.
func (d *Daemon) Dial(target, name string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return rpc.Dial(target, d.ServiceID(name), d.Source, d.Telemetry, opts...)
}

// NewServer returns a gRPC server for this daemon with the given policy;
// each of opts may set the server's transport limits (message size,
// streams, keepalive, windows) before it is built.
func (d *Daemon) NewServer(policy rpc.Policy, opts ...func(*rpc.ServerConfig)) *rpc.Server {
	cfg := rpc.ServerConfig{
		Source: d.Source, TrustDomain: d.TrustDomain, Policy: policy,
		Logger: d.Logger, Telemetry: d.Telemetry,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return rpc.NewServer(cfg)
}

// Listen binds a TCP listener recorded under name in the endpoints file.
func (d *Daemon) Listen(name, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for %s on %s: %w", name, addr, err)
	}
	d.mu.Lock()
	d.listeners[name] = l
	d.mu.Unlock()
	return l, nil
}

// Addr returns the bound address of the listener recorded under name
// ("grpc", "metrics", ...), once it is bound.
func (d *Daemon) Addr(name string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l, ok := d.listeners[name]
	if !ok {
		return "", false
	}
	return l.Addr().String(), true
}

// Component is a long-running part of a service. It runs until ctx is done
// and returns nil on a clean stop.
type Component func(ctx context.Context) error

// Serve binds the gRPC and metrics listeners, writes the endpoints file, and
// runs srv and the components until ctx is done or one of them fails. It
// then stops srv gracefully within the shutdown timeout, and flushes
// telemetry. Listeners made with Listen before Serve are included in the
// endpoints file.
func (d *Daemon) Serve(ctx context.Context, srv *rpc.Server, components ...Component) error {
	defer d.Close()
	gl, err := d.Listen("grpc", d.Config.Listen)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	if d.Config.MetricsListen != "" {
		ml, err := d.Listen("metrics", d.Config.MetricsListen)
		if err != nil {
			gl.Close()
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", d.Telemetry.Handler())
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := hs.Serve(ml); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics server: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return hs.Shutdown(sctx)
		})
	}
	if err := d.writeEndpoints(); err != nil {
		return err
	}
	g.Go(func() error {
		if err := srv.Serve(gl); err != nil {
			return fmt.Errorf("gRPC server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		srv.Health.Shutdown()
		done := make(chan struct{})
		go func() { srv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(d.Config.ShutdownTimeout):
			d.Logger.Warn("shutdown timeout: closing remaining RPCs")
			srv.Stop()
		}
		return nil
	})
	for _, c := range components {
		g.Go(func() error { return c(ctx) })
	}
	d.Logger.Info("serving", slog.String("grpc", gl.Addr().String()))
	err = g.Wait()
	d.Logger.Info("stopped")
	return err
}

// Endpoints maps listener names ("grpc", "metrics", "https") to addresses.
type Endpoints map[string]string

func (d *Daemon) writeEndpoints() error {
	if d.Config.EndpointsFile == "" {
		return nil
	}
	d.mu.Lock()
	eps := Endpoints{}
	for name, l := range d.listeners {
		eps[name] = l.Addr().String()
	}
	d.mu.Unlock()
	b, err := json.Marshal(eps)
	if err != nil {
		return err
	}
	return WriteFileAtomic(d.Config.EndpointsFile, b, 0o644)
}

// WriteFileAtomic writes b to path through a temporary file in the same
// directory, fsync and rename, so readers see the old content or the new,
// never a part.
func WriteFileAtomic(path string, b []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The rename is durable only once the directory is.
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("write %s: sync directory: %w", path, err)
		}
	}
	return nil
}

func joinLines(errs []error) error {
	var msgs []string
	for _, e := range errs {
		if e != nil {
			msgs = append(msgs, e.Error())
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return errors.New(strings.Join(msgs, "\n"))
}
