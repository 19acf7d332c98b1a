package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/custody-dev/custody/cli/internal/devstack"
)

// TestDevStackRestartsAKilledService: a service killed with SIGKILL comes
// back on the same address, stack.json names its new process, the restart
// is in the stack's logs, and the stack serves through it (the publisher is
// killed: an upload needs it, the signer and the catalog).
func TestDevStackRestartsAKilledService(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	s.mustCustody("publish", randomFile(t, work, "a", 4<<10), "--name", "app", "--version", "1", "--channel", "staging")

	old := s.info.PIDs["publisher"]
	addr := s.info.Services["publisher"]["grpc"]
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	l := devstack.Layout{Dir: s.dir}
	var now devstack.Stack
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-s.exited:
			t.Fatalf("dev up exited after a service was killed: %v\n%s", s.upErr, s.upOut)
		case <-time.After(100 * time.Millisecond):
		}
		b, err := os.ReadFile(l.StackFile())
		if err == nil && json.Unmarshal(b, &now) == nil && now.PIDs["publisher"] != old {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publisher not restarted within 90s:\n%s", s.upOut)
		}
	}
	if got := now.Services["publisher"]["grpc"]; got != addr {
		t.Fatalf("publisher restarted on %s, want its old address %s", got, addr)
	}
	// Healthy on the old address, as the other services know it.
	hc := healthpb.NewHealthClient(s.conn("admin", "publisher"))
	for {
		resp, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted publisher not healthy: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// It serves: an upload through it, signed and recorded.
	s.mustCustody("publish", randomFile(t, work, "b", 4<<10), "--name", "app", "--version", "2", "--channel", "staging")
	s.mustCustody("admit", "app@2", "--env", "staging")

	b, err := os.ReadFile(filepath.Join(s.dir, "logs", "supervisor.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"service exited; restarting it", "service restarted", `"service":"publisher"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("supervisor.log lacks %q:\n%s", want, b)
		}
	}
	if b, _ := os.ReadFile(l.LogFile("publisher")); !strings.Contains(string(b), "restarting it") {
		t.Error("the publisher's log does not record its restart")
	}
}
