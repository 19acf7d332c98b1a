package lifecycle

import (
	"context"
	"errors"
	"slices"
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
	p.setDown(false)
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

func (p *purges) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

// timers is a clock whose waits the test sees and ends by hand.
type timers chan timer

type timer struct {
	d    time.Duration
	fire chan time.Time
}

func (ts timers) after(d time.Duration) <-chan time.Time {
	c := make(chan time.Time, 1)
	ts <- timer{d, c}
	return c
}

func (ts timers) next(t *testing.T) timer {
	t.Helper()
	select {
	case tm := <-ts:
		return tm
	case <-time.After(time.Second): // Run asks at once; this only bounds a broken loop
		t.Fatal("Run asked for no wait")
		return timer{}
	}
}

// TestRunBacksOffWhileTheBrokerRefuses: while the broker refuses a
// revocation's purge, Run asks again after 5, 10, 20, 40 s, then every
// minute (jitter factor 1 here); once it accepts, Run waits for nothing,
// and the next refused revocation is asked again after 5 s.
func TestRunBacksOffWhileTheBrokerRefuses(t *testing.T) {
	f := newFixture(t, true)
	p := &purges{down: true}
	ts := make(timers)
	f.purge, f.after, f.jitter = p.purge, ts.after, func() float64 { return 0.5 }
	f.reopen()
	if _, err := f.m.EnsureRoot(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.m.Revoke(t.Context(), "artifact", 1, time.Time{}, "key leaked", "admin"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.m.Run(ctx, time.Hour) }()
	var got []time.Duration
	for range 6 {
		tm := ts.next(t)
		got = append(got, tm.d)
		tm.fire <- time.Time{}
	}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute}
	if !slices.Equal(got, want) {
		t.Fatalf("waits while the broker refuses = %v, want %v", got, want)
	}
	tm := ts.next(t)
	if tm.d != time.Minute {
		t.Fatalf("seventh wait %v, want the cap, 1m", tm.d)
	}
	p.setDown(false)
	tm.fire <- time.Time{}
	for deadline := time.Now().Add(time.Second); f.m.PendingPurges() != 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if f.m.PendingPurges() != 0 {
		t.Fatal("the purge the broker accepted is still pending")
	}
	p.setDown(true)
	if _, _, err := f.m.Revoke(t.Context(), "artifact-prod", 1, time.Time{}, "key leaked", "admin"); err != nil {
		t.Fatal(err)
	}
	if tm := ts.next(t); tm.d != 5*time.Second {
		t.Fatalf("first wait after the broker accepted = %v, want 5s (reset)", tm.d)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v at the end of ctx, want nil", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// The first: at Revoke, at Run's start, 6 refused retries, the accepted
	// one; the second: at Revoke only.
	if n := len(p.calls); n != 10 {
		t.Fatalf("%d purge calls, want 10", n)
	}
}
