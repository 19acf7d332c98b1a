package identity_test

import (
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
)

// TestWorkloadAPIWithSPIRE gets SVIDs from a real SPIRE agent and uses them
// for mTLS on both ends of a call. scripts/test-spire.sh (make test-spire)
// builds SPIRE, starts a server and an agent, registers this process's uid
// and runs this test with the socket and the expected SPIFFE ID.
func TestWorkloadAPIWithSPIRE(t *testing.T) {
	addr := os.Getenv("CUSTODY_TEST_SPIRE_SOCKET")
	if addr == "" {
		t.Skip("needs a running SPIRE agent: run make test-spire")
	}
	want := spiffeid.RequireFromString(os.Getenv("CUSTODY_TEST_SPIRE_ID"))

	src, err := identity.Open(t.Context(), identity.Config{WorkloadAPIAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != want {
		t.Fatalf("SVID from the Workload API is %s, want %s", svid.ID, want)
	}
	if left := time.Until(svid.Certificates[0].NotAfter); left <= 0 {
		t.Fatalf("SVID already expired %v ago", -left)
	}

	tel := telemetry.Discard("spire-test")
	srv := rpc.NewServer(rpc.ServerConfig{
		Source: src, TrustDomain: want.TrustDomain(), Logger: slog.New(slog.DiscardHandler), Telemetry: tel,
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Stop()
	conn, err := rpc.Dial(l.Addr().String(), want, src, tel)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("mTLS call with SPIRE-issued SVIDs: %v", err)
	}
}
