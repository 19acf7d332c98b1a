package rpc_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
)

// A connection carries at most MaxConcurrentStreams RPCs; the next one
// waits until one ends.
func TestMaxConcurrentStreams(t *testing.T) {
	td := identitytest.New(t, "custody.test")
	srv := rpc.NewServer(rpc.ServerConfig{Source: td.Source(t, "/service/test"), TrustDomain: td.TD,
		Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard("test"), MaxConcurrentStreams: 2,
		InitialWindowSize: 1 << 20, InitialConnWindowSize: 4 << 20, ReadBufferSize: 128 << 10, WriteBufferSize: 128 << 10,
		KeepaliveTime: time.Minute, KeepaliveTimeout: 10 * time.Second})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	f := &fixture{td: td, addr: l.Addr().String()}
	health := healthpb.NewHealthClient(f.dialAs(t, "/builder/ci"))
	watch := func(ctx context.Context) error {
		w, err := health.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		return err
	}
	first, cancelFirst := context.WithCancel(t.Context())
	for range 2 {
		if err := watch(first); err != nil {
			t.Fatal(err)
		}
	}
	third := make(chan error, 1)
	go func() { third <- watch(t.Context()) }()
	select {
	case err := <-third:
		t.Fatalf("a third stream ran on a connection limited to 2: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	cancelFirst()
	select {
	case err := <-third:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the third stream did not start after the first two ended")
	}
}
