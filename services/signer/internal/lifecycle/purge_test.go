package lifecycle

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// purges records the Purge calls and can be down, as a broker can.
type purges struct {
	mu    sync.Mutex
	down  bool
	calls []purgeCall
}

type purgeCall struct {
	keyID, reference string
	effective        time.Time
}

func (p *purges) purge(_ context.Context, keyID string, effective time.Time, reference string) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, purgeCall{keyID, reference, effective})
	if p.down {
		return 0, errors.New("broker down")
	}
	return 1, nil
}

// TestRevocationPurgeSurvivesABrokerThatIsDown: the purge is recorded with
// the revocation, survives a restart while the broker is down, and is asked
// again (under the same reference) until the broker accepts it; then it is
// forgotten.
func TestRevocationPurgeSurvivesABrokerThatIsDown(t *testing.T) {
	f := newFixture(t, true)
	p := &purges{down: true}
	f.purge = p.purge
	f.reopen()
	if _, err := f.m.EnsureRoot(t.Context()); err != nil {
		t.Fatal(err)
	}
	earlier := f.clock.now().Add(-time.Hour)
	in, _, err := f.m.Revoke(t.Context(), "artifact", 1, earlier, "key leaked", "admin")
	if err != nil {
		t.Fatalf("Revoke with the broker down = %v: the revocation must not fail for its purge", err)
	}
	if len(p.calls) != 1 || f.m.PendingPurges() != 1 {
		t.Fatalf("%d purge calls, %d pending; want 1 asked at once and 1 pending", len(p.calls), f.m.PendingPurges())
	}
	first := p.calls[0]
	if first.keyID != in.ID || !first.effective.Equal(earlier) || !strings.HasPrefix(first.reference, "key-revoked-"+in.ID[:16]) {
		t.Fatalf("purge asked as %+v, want key %s from %v", first, in.ID, earlier)
	}
	// A later revocation time changes nothing, so asks for no new purge.
	if _, _, err := f.m.Revoke(t.Context(), "artifact", 1, f.clock.now(), "again", "admin"); err != nil {
		t.Fatal(err)
	}
	if f.m.PendingPurges() != 1 {
		t.Fatalf("%d pending purges after a later revocation, want 1", f.m.PendingPurges())
	}
	f.reopen() // a restart while the broker is down
	if f.m.PendingPurges() != 1 {
		t.Fatalf("%d pending purges after a restart, want 1", f.m.PendingPurges())
	}
	p.down = false
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.m.Run(ctx, 10*time.Millisecond) }()
	deadline := time.Now().Add(5 * time.Second)
	for f.m.PendingPurges() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if f.m.PendingPurges() != 0 {
		t.Fatal("Run did not ask again for the pending purge")
	}
	p.mu.Lock()
	last := p.calls[len(p.calls)-1]
	p.mu.Unlock()
	if last != first {
		t.Fatalf("retried purge %+v, want the same as %+v", last, first)
	}
	f.reopen()
	if f.m.PendingPurges() != 0 {
		t.Fatal("an accepted purge came back after a restart")
	}
}
