package server

import (
	"strings"
	"testing"
	"time"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
)

// TestFrozenLogDenied: through the gRPC server with the gate wired to a
// loghead.Tracker of the catalog's co-signed checkpoints (as cmd/gatekeeper
// does), an admission is allowed while the head is fresh, and denied,
// signed and logged, naming the stale checkpoint once the head is older
// than the maximum age (the clock moved past it while the catalog's
// checkpoint is not refreshed: GetCheckpoint fails); allowed again when the
// catalog answers with a fresh one.
func TestFrozenLogDenied(t *testing.T) {
	s := newStackWith(t, stackOptions{logHead: true})
	s.publish(t, "app", "1.0.0", "prod")
	resp, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"})
	if err != nil || resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
		t.Fatalf("fresh log: %v %v %q", err, resp.GetDecision(), resp.GetReasons())
	}
	if !strings.Contains(strings.Join(resp.GetReasons(), "\n"), "consistent with the log head") {
		t.Errorf("allow reasons lack the log head check: %q", resp.GetReasons())
	}
	// The catalog stops serving checkpoints; six minutes pass.
	s.catalog.mu.Lock()
	witness := s.catalog.witness
	s.catalog.witness = ""
	s.catalog.mu.Unlock()
	s.clock.Store(int64(6 * time.Minute))
	events := s.catalog.eventCount()
	resp, err = s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	reasons := strings.Join(resp.GetReasons(), "\n")
	if resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !strings.Contains(reasons, "the log checkpoint is stale") ||
		!strings.Contains(reasons, "more than the maximum age 5m0s") {
		t.Fatalf("frozen log: %v %q; want a deny naming the stale checkpoint", resp.GetDecision(), resp.GetReasons())
	}
	if len(resp.GetDecisionEnvelope()) == 0 || s.catalog.eventCount() != events+1 {
		t.Errorf("the stale deny is not signed and logged (envelope %d bytes, %d events logged)", len(resp.GetDecisionEnvelope()), s.catalog.eventCount()-events)
	}
	// A fresh checkpoint again: the clock back, the catalog answering.
	s.catalog.mu.Lock()
	s.catalog.witness = witness
	s.catalog.mu.Unlock()
	s.clock.Store(0)
	time.Sleep(1100 * time.Millisecond) // the tracker asks at most once a second on demand
	resp, err = s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"})
	if err != nil || resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
		t.Fatalf("log fresh again: %v %v %q", err, resp.GetDecision(), resp.GetReasons())
	}
}
