package rpc_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
)

// fixture serves the standard health service, restricted by a policy that
// names Check for /builder/* only, so both the allow and the deny path of the
// production interceptors can be driven.
type fixture struct {
	td   *identitytest.TrustDomain
	addr string
	tel  *telemetry.Telemetry
}

func start(t *testing.T, policy func(*identitytest.TrustDomain) rpc.Policy) *fixture {
	t.Helper()
	td := identitytest.New(t, "custody.test")
	tel := telemetry.Discard("test")
	srv := rpc.NewServer(rpc.ServerConfig{
		Source:      td.Source(t, "/service/test"),
		TrustDomain: td.TD,
		Policy:      policy(td),
		Logger:      slog.New(slog.DiscardHandler),
		Telemetry:   tel,
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return &fixture{td: td, addr: l.Addr().String(), tel: tel}
}

func (f *fixture) dialAs(t *testing.T, path string) *grpc.ClientConn {
	t.Helper()
	conn, err := rpc.Dial(f.addr, f.td.ID("/service/test"), f.td.Source(t, path), telemetry.Discard("client"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestHealthOpenToTrustDomainMembers(t *testing.T) {
	f := start(t, func(*identitytest.TrustDomain) rpc.Policy { return nil })
	for _, who := range []string{"/builder/ci", "/deployer/pipeline", "/auditor/audit"} {
		_, err := healthpb.NewHealthClient(f.dialAs(t, who)).Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Errorf("health check as %s: %v", who, err)
		}
	}
}

func TestPolicyDecisions(t *testing.T) {
	td := identitytest.New(t, "custody.test")
	other := identitytest.New(t, "other.test")
	p := rpc.Policy{
		"/s/Builders":  {rpc.Under{TrustDomain: td.TD, Prefix: "/builder"}},
		"/s/Publisher": {rpc.ID(td.ID("/service/publisher"))},
		"/s/Anyone":    {rpc.Member(td.TD)},
	}
	tests := []struct {
		method string
		id     string
		td     *identitytest.TrustDomain
		want   bool
	}{
		{"/s/Builders", "/builder/ci", td, true},
		{"/s/Builders", "/builder", td, false},
		{"/s/Builders", "/builderx/ci", td, false},
		{"/s/Builders", "/builder/ci", other, false},
		{"/s/Publisher", "/service/publisher", td, true},
		{"/s/Publisher", "/service/publisher/x", td, false},
		{"/s/Anyone", "/auditor/a", td, true},
		{"/s/Anyone", "/auditor/a", other, false},
		{"/s/Missing", "/admin/ops", td, false},
	}
	for _, tt := range tests {
		if got := p.Allowed(tt.method, tt.td.ID(tt.id)); got != tt.want {
			t.Errorf("Allowed(%s, %s) = %v, want %v", tt.method, tt.td.ID(tt.id), got, tt.want)
		}
	}
}

// guarded is a one-method service whose policy the test controls; generated
// handlers hard-code their own method names, so it is built by hand.
func guarded(method string) *grpc.ServiceDesc {
	name := strings.Split(strings.TrimPrefix(method, "/"), "/")
	return &grpc.ServiceDesc{
		ServiceName: name[0],
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: name[1],
			Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
				in := new(healthpb.HealthCheckRequest)
				if err := dec(in); err != nil {
					return nil, err
				}
				h := func(context.Context, any) (any, error) {
					return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
				}
				return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: method}, h)
			},
		}},
	}
}

func TestDeniedCallIsPermissionDeniedLoggedAndCounted(t *testing.T) {
	const method = "/custody.test.v1.Guarded/Check"
	td := identitytest.New(t, "custody.test")
	tel := telemetry.Discard("test")
	var logs strings.Builder
	srv := rpc.NewServer(rpc.ServerConfig{
		Source: td.Source(t, "/service/test"), TrustDomain: td.TD,
		Policy:    rpc.Policy{method: {rpc.Under{TrustDomain: td.TD, Prefix: "/builder"}}},
		Logger:    slog.New(slog.NewTextHandler(&logs, nil)),
		Telemetry: tel,
	})
	srv.RegisterService(guarded(method), struct{}{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)

	call := func(path string) error {
		conn, err := rpc.Dial(l.Addr().String(), td.ID("/service/test"), td.Source(t, path), telemetry.Discard("c"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.Invoke(t.Context(), method, &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	}
	if err := call("/builder/ci"); err != nil {
		t.Fatalf("allowed caller: %v", err)
	}
	err = call("/deployer/pipeline")
	st := status.Convert(err)
	if st.Code() != codes.PermissionDenied {
		t.Fatalf("denied caller: code %v (%v), want PermissionDenied", st.Code(), err)
	}
	want := method + " denied for spiffe://custody.test/deployer/pipeline"
	if diff := cmp.Diff(want, st.Message()); diff != "" {
		t.Errorf("denial message (-want +got):\n%s", diff)
	}
	if got := testutil.ToFloat64(tel.Metrics.AuthzDenied.WithLabelValues(method)); got != 1 {
		t.Errorf("custody_authz_denied_total{method=%q} = %v, want 1", method, got)
	}
	if got := testutil.ToFloat64(tel.Metrics.RPCs.WithLabelValues(method, "PermissionDenied")); got != 1 {
		t.Errorf("custody_rpc_requests_total{code=PermissionDenied} = %v, want 1", got)
	}
	if !strings.Contains(logs.String(), "authorization denied") || !strings.Contains(logs.String(), "spiffe://custody.test/deployer/pipeline") {
		t.Errorf("denial not logged with the caller; log:\n%s", logs.String())
	}
}

func TestTLSRefusesForeignTrustDomainAndMissingCertificate(t *testing.T) {
	f := start(t, func(*identitytest.TrustDomain) rpc.Policy { return nil })
	server := f.td.ID("/service/test")

	t.Run("foreign trust domain", func(t *testing.T) {
		other := identitytest.New(t, "evil.test")
		src := other.Source(t, "/builder/ci")
		// The client trusts the real server (so only the server's check can
		// fail) but presents an SVID from another trust domain.
		cfg := rpc.ClientTLS(&mixed{Source: src, bundleOf: f.td.Source(t, "/x")}, server)
		if err := handshake(t, f.addr, cfg); err == nil {
			t.Fatal("handshake with a foreign-trust-domain SVID succeeded")
		}
		conn, err := rpc.Dial(f.addr, server, &mixed{Source: src, bundleOf: f.td.Source(t, "/x")}, telemetry.Discard("c"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("RPC with a foreign SVID: %v, want Unavailable (refused at the handshake)", err)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		cfg := rpc.ClientTLS(f.td.Source(t, "/builder/ci"), server)
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
		if err := handshake(t, f.addr, cfg); err == nil {
			t.Fatal("handshake without a client certificate succeeded")
		}
		conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("RPC without a client certificate: %v, want Unavailable", err)
		}
	})
}

// handshake completes a TLS handshake and one read, which is where TLS 1.3
// reports the server's rejection of the client certificate.
func handshake(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"}
	ctx, cancel := context.WithTimeout(t.Context(), 5e9)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	// Send the HTTP/2 preface so the server reads, then read its answer.
	if _, err := c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 1))
	return err
}

// TestStreamWorkersDoNotBoundRPCs: with a pool of one stream worker, four
// RPCs that each wait for all four to be in their handlers still all run
// at once: an RPC that finds every worker busy gets its own goroutine.
func TestStreamWorkersDoNotBoundRPCs(t *testing.T) {
	const method, calls = "/custody.test.v1.Barrier/Check", 4
	td := identitytest.New(t, "custody.test")
	srv := rpc.NewServer(rpc.ServerConfig{
		Source: td.Source(t, "/service/test"), TrustDomain: td.TD,
		Policy: rpc.Policy{method: {rpc.Under{TrustDomain: td.TD, Prefix: "/builder"}}},
		Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard("test"), StreamWorkers: 1,
	})
	var arrived sync.WaitGroup
	arrived.Add(calls)
	desc := guarded(method)
	inner := desc.Methods[0].Handler
	desc.Methods[0].Handler = func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		arrived.Done()
		arrived.Wait()
		return inner(srv, ctx, dec, ic)
	}
	srv.RegisterService(desc, struct{}{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	f := &fixture{td: td, addr: l.Addr().String()}
	conn := f.dialAs(t, "/builder/ci")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	errs := make(chan error, calls)
	for range calls {
		go func() {
			errs <- conn.Invoke(ctx, method, &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
		}()
	}
	for range calls {
		if err := <-errs; err != nil {
			t.Fatalf("an RPC beyond the one stream worker: %v", err)
		}
	}
}
