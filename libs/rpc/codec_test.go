package rpc_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
)

// rawCodec sends the bytes it is given as the message, as a hostile client
// would, and hands back the response bytes undecoded.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: %T, want []byte", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: %T, want *[]byte", v)
	}
	*p = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// echoDesc is a hand-written service in the shape protoc-gen-go-grpc
// generates: the unary handler decodes before it calls the interceptors.
var echoDesc = grpc.ServiceDesc{
	ServiceName: "test.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(healthpb.HealthCheckRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(context.Context, any) (any, error) { return &healthpb.HealthCheckResponse{}, nil }
			return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/test.Echo/Echo"}, h)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName: "Stream", ClientStreams: true, ServerStreams: true,
		Handler: func(_ any, ss grpc.ServerStream) error {
			in := new(healthpb.HealthCheckRequest)
			if err := ss.RecvMsg(in); err != nil {
				return err
			}
			return ss.SendMsg(&healthpb.HealthCheckResponse{})
		},
	}},
}

// malformed is field 1 (a proto3 string) holding a marker and a byte that
// is not UTF-8: no valid HealthCheckRequest.
var malformed = append([]byte{0x0a, 0x0e}, []byte("HOSTILE-BYTES\xff")...)

func TestMalformedRequestIsInvalidArgument(t *testing.T) {
	td := identitytest.New(t, "custody.test")
	srv := rpc.NewServer(rpc.ServerConfig{
		Source: td.Source(t, "/service/test"), TrustDomain: td.TD,
		Policy: rpc.Policy{
			"/test.Echo/Echo":   {rpc.Under{TrustDomain: td.TD, Prefix: "/builder"}},
			"/test.Echo/Stream": {rpc.Under{TrustDomain: td.TD, Prefix: "/builder"}},
		},
		Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard("test"),
	})
	srv.RegisterService(&echoDesc, struct{}{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	dial := func(as string) *grpc.ClientConn {
		conn, err := rpc.Dial(l.Addr().String(), td.ID("/service/test"), td.Source(t, as), telemetry.Discard("client"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	builder, deployer := dial("/builder/ci"), dial("/deployer/pipeline")
	unary := func(conn *grpc.ClientConn, method string, in []byte) error {
		var out []byte
		return conn.Invoke(t.Context(), method, in, &out, grpc.ForceCodecV2(rawCodec{}))
	}
	stream := func(conn *grpc.ClientConn, in []byte) error {
		s, err := conn.NewStream(t.Context(), &echoDesc.Streams[0], "/test.Echo/Stream", grpc.ForceCodecV2(rawCodec{}))
		if err != nil {
			return err
		}
		if err := s.SendMsg(in); err != nil {
			return err
		}
		var out []byte
		return s.RecvMsg(&out)
	}
	valid := append([]byte{0x0a, 0x02}, "ok"...)
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"valid unary", func() error { return unary(builder, "/test.Echo/Echo", valid) }, codes.OK},
		{"malformed unary", func() error { return unary(builder, "/test.Echo/Echo", malformed) }, codes.InvalidArgument},
		{"truncated unary", func() error { return unary(builder, "/test.Echo/Echo", []byte{0x0a, 0x40, 'x'}) }, codes.InvalidArgument},
		{"malformed unary, caller not allowed", func() error { return unary(deployer, "/test.Echo/Echo", malformed) }, codes.PermissionDenied},
		{"valid unary, caller not allowed", func() error { return unary(deployer, "/test.Echo/Echo", valid) }, codes.PermissionDenied},
		{"malformed health check", func() error { return unary(deployer, "/grpc.health.v1.Health/Check", malformed) }, codes.InvalidArgument},
		{"valid stream", func() error { return stream(builder, valid) }, codes.OK},
		{"malformed stream", func() error { return stream(builder, malformed) }, codes.InvalidArgument},
		{"malformed stream, caller not allowed", func() error { return stream(deployer, malformed) }, codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v (%v), want %v", got, err, tt.want)
			}
			if err != nil && strings.Contains(status.Convert(err).Message(), "HOSTILE") {
				t.Errorf("the error echoes the request: %v", err)
			}
		})
	}
}

// Standard services registered through rpc.Server map too; the fixture of
// server_test.go registers nothing else, so this runs against NewServer's own
// health service with an identity that is allowed.
func TestMalformedHealthCheckFromMember(t *testing.T) {
	f := start(t, func(*identitytest.TrustDomain) rpc.Policy { return nil })
	var out []byte
	err := f.dialAs(t, "/auditor/audit").Invoke(t.Context(), "/grpc.health.v1.Health/Check", malformed, &out, grpc.ForceCodecV2(rawCodec{}))
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
}
