package rpc

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffegrpc/grpccredentials"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/telemetry"
)

// ServerConfig configures NewServer.
type ServerConfig struct {
	Source      identity.Source
	TrustDomain spiffeid.TrustDomain
	// Policy authorizes each RPC. Health checking and reflection are added
	// for every member of the trust domain.
	Policy    Policy
	Logger    *slog.Logger
	Telemetry *telemetry.Telemetry
	// MaxConnectionAge bounds how long a client keeps a connection, and so how
	// long an old SVID stays in use after rotation. Zero means 10 minutes.
	MaxConnectionAge time.Duration
	// MaxRecvMsgSize bounds incoming messages. Zero means 4 MiB.
	MaxRecvMsgSize int
	// MaxConcurrentStreams bounds the RPCs in flight on one connection;
	// further streams wait on the client. Zero means gRPC's default (no
	// bound).
	MaxConcurrentStreams uint32
	// KeepaliveTime is how long a connection may be idle before the server
	// pings the client, and KeepaliveTimeout how long it then waits for the
	// answer before closing the connection, which ends its RPCs. Zero means
	// gRPC's defaults (2 hours, 20 seconds). Clients pinging more often than
	// every 5 minutes are disconnected (gRPC's enforcement default).
	KeepaliveTime, KeepaliveTimeout time.Duration
	// InitialWindowSize and InitialConnWindowSize fix the HTTP/2 flow-control
	// windows of a stream and of a connection; they bound what a peer may
	// have in flight, so memory per stream. Zero means gRPC's dynamic
	// windows (bandwidth-delay estimation).
	InitialWindowSize, InitialConnWindowSize int32
	// ReadBufferSize and WriteBufferSize size the connection's socket
	// buffers; larger ones mean fewer system calls for bulk transfers. Zero
	// means gRPC's defaults (32 KiB).
	ReadBufferSize, WriteBufferSize int
	// StreamWorkers, if not zero, runs RPC handlers on a pool of that many
	// long-lived goroutines (gRPC's NumStreamWorkers) instead of a new
	// goroutine each: a handler then starts on a stack already grown by
	// the RPCs before it rather than growing a fresh one copy by copy. An
	// RPC arriving while every worker is busy gets its own goroutine as
	// without the pool, so it bounds nothing.
	StreamWorkers uint32
}

// Server is a gRPC server with Custody's production interceptors, health
// checking and reflection.
type Server struct {
	*grpc.Server
	Health *health.Server
}

// NewServer returns a server that accepts only mTLS clients with an SVID of
// cfg.TrustDomain and authorizes every RPC by cfg.Policy, deny by default.
// Register services on it, then call Serve.
func NewServer(cfg ServerConfig) *Server {
	age := cfg.MaxConnectionAge
	if age == 0 {
		age = 10 * time.Minute
	}
	policy := Policy{}
	for m, rules := range cfg.Policy {
		policy[m] = rules
	}
	member := Member(cfg.TrustDomain)
	for _, m := range []string{
		"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch", "/grpc.health.v1.Health/List",
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
	} {
		policy[m] = append(policy[m], member)
	}
	authz := &authorizer{policy: policy, logger: cfg.Logger, metrics: cfg.Telemetry.Metrics}
	counted := &counter{metrics: cfg.Telemetry.Metrics}
	rec := &recoverer{logger: cfg.Logger}
	guard := newMalformedGuard(authz)
	opts := []grpc.ServerOption{
		grpc.Creds(ServerCredentials(cfg.Source, cfg.TrustDomain)),
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(cfg.Telemetry.TracerProvider),
			otelgrpc.WithPropagators(cfg.Telemetry.Propagator))),
		// A malformed request is InvalidArgument, not Internal: see malformedGuard.
		grpc.ForceServerCodecV2(guardCodec{guard}),
		grpc.ChainUnaryInterceptor(counted.unary, guard.unary, rec.unary, authz.unary),
		grpc.ChainStreamInterceptor(counted.stream, guard.stream, rec.stream, authz.stream),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: age, MaxConnectionAgeGrace: time.Minute,
			Time: cfg.KeepaliveTime, Timeout: cfg.KeepaliveTimeout}),
	}
	if cfg.MaxRecvMsgSize > 0 {
		opts = append(opts, grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize))
	}
	if cfg.MaxConcurrentStreams > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams))
	}
	if cfg.InitialWindowSize > 0 {
		opts = append(opts, grpc.InitialWindowSize(cfg.InitialWindowSize))
	}
	if cfg.ReadBufferSize > 0 {
		opts = append(opts, grpc.ReadBufferSize(cfg.ReadBufferSize))
	}
	if cfg.WriteBufferSize > 0 {
		opts = append(opts, grpc.WriteBufferSize(cfg.WriteBufferSize))
	}
	if cfg.StreamWorkers > 0 {
		opts = append(opts, grpc.NumStreamWorkers(cfg.StreamWorkers))
	}
	if cfg.InitialConnWindowSize > 0 {
		opts = append(opts, grpc.InitialConnWindowSize(cfg.InitialConnWindowSize))
	}
	s := &Server{Server: grpc.NewServer(opts...), Health: health.NewServer()}
	healthpb.RegisterHealthServer(s.Server, s.Health)
	reflection.Register(s.Server)
	return s
}

// ServerCredentials are the server side of SPIFFE mTLS: a client certificate
// is required and must be an SVID of td. Method-level authorization happens
// in the interceptor, so that a refused call gets a clean PermissionDenied.
func ServerCredentials(src identity.Source, td spiffeid.TrustDomain) credentials.TransportCredentials {
	return coalesce(grpccredentials.MTLSServerCredentials(src, src, tlsconfig.AuthorizeMemberOf(td)))
}

// ClientTLS returns a TLS config for calling the server with SPIFFE ID
// server, presenting this process's SVID.
func ClientTLS(src identity.Source, server spiffeid.ID) *tls.Config {
	return tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(server))
}

// Dial returns a client connection to target that authenticates the server
// as the SPIFFE ID server and presents this process's SVID. The connection is
// made lazily; tracing context propagates through it.
func Dial(target string, server spiffeid.ID, src identity.Source, tel *telemetry.Telemetry, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(coalesce(grpccredentials.MTLSClientCredentials(src, src, tlsconfig.AuthorizeID(server)))),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithTracerProvider(tel.TracerProvider),
			otelgrpc.WithPropagators(tel.Propagator))),
	}, opts...)
	conn, err := grpc.NewClient(target, all...)
	if err != nil {
		return nil, fmt.Errorf("dial %s as %s: %w", target, server, err)
	}
	return conn, nil
}

type counter struct{ metrics *telemetry.Metrics }

func (c *counter) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	c.metrics.RPCs.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return resp, err
}

func (c *counter) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	c.metrics.RPCs.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return err
}

// recoverer turns a handler panic into Internal so one bad request cannot
// take the process down; the stack goes to the log, not to the client.
type recoverer struct{ logger *slog.Logger }

func (r *recoverer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer r.recover(ctx, info.FullMethod, &err)
	return handler(ctx, req)
}

func (r *recoverer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer r.recover(ss.Context(), info.FullMethod, &err)
	return handler(srv, ss)
}

func (r *recoverer) recover(ctx context.Context, method string, err *error) {
	if p := recover(); p != nil {
		r.logger.ErrorContext(ctx, "handler panicked", slog.String("method", method), slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
		*err = status.Error(codes.Internal, "internal error")
	}
}
