package rpc

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/telemetry"
)

// TestGuardForgetsWhatItSaw: a malformed message is reset, refused once by
// the interceptor that sees it, and not kept afterwards.
func TestGuardForgetsWhatItSaw(t *testing.T) {
	g := newMalformedGuard(&authorizer{policy: Policy{}, logger: slog.New(slog.DiscardHandler), metrics: telemetry.Discard("t").Metrics})
	c := guardCodec{g}
	in := &healthpb.HealthCheckRequest{Service: "left over"}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x05, 'x'})}, in); err != nil {
		t.Fatalf("Unmarshal returned %v; the guard, not the codec, refuses", err)
	}
	if in.GetService() != "" {
		t.Errorf("malformed message not reset: %q", in.GetService())
	}
	called := false
	_, err := g.unary(context.Background(), in, &grpc.UnaryServerInfo{FullMethod: "/s/M"}, func(context.Context, any) (any, error) {
		called = true
		return nil, nil
	})
	// No peer identity in this context: the authorization check answers first.
	if called || status.Code(err) != codes.Unauthenticated {
		t.Fatalf("unary: called=%v err=%v", called, err)
	}
	n := 0
	g.pending.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d messages still recorded", n)
	}
	// A valid message passes through untouched.
	ok := &healthpb.HealthCheckRequest{}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x01, 'x'})}, ok); err != nil || ok.GetService() != "x" {
		t.Fatalf("valid message: %v %q", err, ok.GetService())
	}
	if _, err := g.unary(context.Background(), ok, &grpc.UnaryServerInfo{FullMethod: "/s/M"}, func(context.Context, any) (any, error) { return nil, errors.New("reached") }); err == nil || err.Error() != "reached" {
		t.Errorf("valid message did not reach the handler: %v", err)
	}
}
