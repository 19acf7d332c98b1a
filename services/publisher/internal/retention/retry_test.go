package retention

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/custody-dev/custody/libs/tlog"
)

// clock is Loop's wait between retries, driven by the test: every wait
// Loop asks for is queued on waits and fires only when the test fires it.
type clock struct{ waits chan wait }

type wait struct {
	d    time.Duration
	fire chan time.Time
}

func newClock() *clock { return &clock{waits: make(chan wait, 100)} }

func (c *clock) after(d time.Duration) <-chan time.Time {
	w := wait{d: d, fire: make(chan time.Time, 1)}
	c.waits <- w
	return w.fire
}

// next returns the wait Loop asked for next, without firing it.
func (c *clock) next(t *testing.T) wait {
	t.Helper()
	select {
	case w := <-c.waits:
		return w
	case <-time.After(10 * time.Second):
		t.Fatal("Loop scheduled no retry")
		return wait{}
	}
}

// retryFixture is one deleted blob whose purge the first Run could not
// hand to the broker, and a Loop ready to retry it.
type retryFixture struct {
	*fixture
	r     *Runner
	p     *purger
	clock *clock
	reg   *prometheus.Registry
	gone  string
}

func newRetryFixture(t *testing.T, p *purger) *retryFixture {
	t.Helper()
	f := newFixture(t)
	gone := f.publish(t, "app", "1", "dev", "app 1", 3*24*time.Hour)
	f.publish(t, "app", "2", "dev", "app 2", 2*24*time.Hour)
	c, reg := newClock(), prometheus.NewRegistry()
	r := f.runner(t, `{"channels": {"dev": {"keep_last": 1}}}`, func(cfg *Config) {
		cfg.Purger, cfg.After, cfg.Registerer = p, c.after, reg
		cfg.Jitter = func() float64 { return 0.5 } // factor 1: the waits are exact
	})
	if _, err := r.Run(t.Context(), false); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("run with the purge refused: %v, want ErrUnavailable", err)
	}
	if f.stored(t, gone) {
		t.Fatal("the blob is still stored")
	}
	return &retryFixture{fixture: f, r: r, p: p, clock: c, reg: reg, gone: gone}
}

// metrics checks the three retention metrics.
func (f *retryFixture) metrics(t *testing.T, pending int, failures float64) {
	t.Helper()
	oldest := 0.0
	if pending > 0 {
		oldest = float64(f.now.Unix())
	}
	want := fmt.Sprintf(`# HELP custody_retention_purges_pending Retention deletions whose purge the cdn-broker has not accepted yet (journalled until it does).
# TYPE custody_retention_purges_pending gauge
custody_retention_purges_pending %d
# HELP custody_retention_purge_oldest_pending_timestamp_seconds When the oldest retention deletion whose purge the cdn-broker has not accepted was decided (Unix seconds; 0: none pending).
# TYPE custody_retention_purge_oldest_pending_timestamp_seconds gauge
custody_retention_purge_oldest_pending_timestamp_seconds %g
# HELP custody_retention_purge_handoff_failures_total Purges of blobs retention destroyed that the cdn-broker refused or did not answer.
# TYPE custody_retention_purge_handoff_failures_total counter
custody_retention_purge_handoff_failures_total %g
`, pending, oldest, failures)
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func (f *retryFixture) journal(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(f.dir, "retention"))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func (f *retryFixture) loop(t *testing.T) (cancel func(), done <-chan error) {
	ctx, cancel := context.WithCancel(t.Context())
	ch := make(chan error, 1)
	go func() { ch <- f.r.Loop(ctx, time.Hour) }()
	t.Cleanup(cancel)
	return cancel, ch
}

// TestRefusedPurgeIsRetriedWithBackoff: a purge the broker refuses three
// times is asked again by Loop after 5 s, 10 s, 20 s (not at the next
// hourly run), under the same reference; a retry due while a run holds the
// lock does nothing and waits again; once accepted, the deletion is
// logged once, the journal removed and the gauges back to 0.
func TestRefusedPurgeIsRetriedWithBackoff(t *testing.T) {
	f := newRetryFixture(t, &purger{fail: 3})
	f.metrics(t, 1, 1)
	_, done := f.loop(t)

	// A run (RunRetention) holds the lock when the first retry is due.
	f.r.run.Lock()
	w := f.clock.next(t)
	if w.d != 5*time.Second {
		t.Fatalf("first wait %s, want 5s", w.d)
	}
	w.fire <- time.Time{}
	w = f.clock.next(t)
	f.r.run.Unlock()
	if n := f.p.count(); n != 1 || w.d != 5*time.Second {
		t.Fatalf("a retry during a run: %d purge calls, next wait %s; want 1 call and 5s again", n, w.d)
	}
	var waits []time.Duration
	for {
		waits = append(waits, w.d)
		w.fire <- time.Time{}
		if len(waits) == 3 {
			break
		}
		w = f.clock.next(t)
	}
	if want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second}; !slices.Equal(waits, want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := f.r.PendingPurges(); n != 0 || f.journal(t) != 0; n, _ = f.r.PendingPurges() {
		if time.Now().After(deadline) {
			t.Fatalf("after the broker accepted: %d pending purges, %d journal files", n, f.journal(t))
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case w := <-f.clock.waits:
		t.Fatalf("a retry (%s) scheduled with the journal empty", w.d)
	default:
	}
	f.p.mu.Lock()
	calls := slices.Clone(f.p.calls)
	f.p.mu.Unlock()
	if len(calls) != 4 {
		t.Fatalf("%d purge calls, want 4 (the run's and three retries)", len(calls))
	}
	for _, c := range calls {
		if c.GetReference() != calls[0].GetReference() || !slices.Equal(c.GetDigests(), []string{f.gone}) || c.GetReason() != PurgeReason {
			t.Fatalf("purge %v, want %s under reason %s and reference %s", c, f.gone, PurgeReason, calls[0].GetReference())
		}
	}
	f.cat.mu.Lock()
	appended := slices.Clone(f.cat.appended)
	f.cat.mu.Unlock()
	if len(appended) != 1 || appended[0].GetSubjectDigest() != f.gone || appended[0].GetType() != tlog.TypeArtifactRetentionDeleted {
		t.Fatalf("events %v, want one retention deletion of %s", appended, f.gone)
	}
	f.metrics(t, 0, 3)
	select {
	case err := <-done:
		t.Fatalf("Loop returned %v", err)
	default:
	}
}

// TestPurgeRefusedForeverKeepsTheJournal: while the broker refuses, the
// journal stays, the gauge says 1 with the deletion's time, the failure
// counter grows with each retry and the waits double up to the 5 min
// ceiling; cancelling stops the loop and its retries.
func TestPurgeRefusedForeverKeepsTheJournal(t *testing.T) {
	f := newRetryFixture(t, &purger{down: true})
	cancel, done := f.loop(t)
	var waits []time.Duration
	for range 8 {
		w := f.clock.next(t)
		waits = append(waits, w.d)
		w.fire <- time.Time{}
	}
	last := f.clock.next(t) // the 9th wait, not fired: eight retries are done
	s := time.Second
	if want := []time.Duration{5 * s, 10 * s, 20 * s, 40 * s, 80 * s, 160 * s, 300 * s, 300 * s}; !slices.Equal(waits, want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	if last.d != 300*s {
		t.Fatalf("ninth wait %s, want the 5 min ceiling", last.d)
	}
	if n := f.p.count(); n != 9 {
		t.Fatalf("%d purge calls, want 9 (the run's and eight retries)", n)
	}
	if f.journal(t) != 1 || len(f.cat.appended) != 0 {
		t.Fatalf("%d journal files and %d events, want the journal kept and nothing logged", f.journal(t), len(f.cat.appended))
	}
	f.metrics(t, 1, 9)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Loop did not stop when cancelled")
	}
	last.fire <- time.Time{}
	if n := f.p.count(); n != 9 {
		t.Fatalf("%d purge calls after cancelling, want 9", n)
	}
	select {
	case w := <-f.clock.waits:
		t.Fatalf("a retry (%s) scheduled after cancelling", w.d)
	default:
	}
}

// TestBackoff: the wait doubles from 5 s up to the lower of the run
// interval and 5 min, times a jitter factor in [0.5, 1.5), never above
// that ceiling.
func TestBackoff(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		interval time.Duration
		jitter   float64
		want     []time.Duration
	}{
		{time.Hour, 0.5, []time.Duration{5 * s, 10 * s, 20 * s, 40 * s, 80 * s, 160 * s, 300 * s, 300 * s}},
		{time.Minute, 0.5, []time.Duration{5 * s, 10 * s, 20 * s, 40 * s, 60 * s, 60 * s}},
		{time.Hour, 0, []time.Duration{2500 * time.Millisecond, 5 * s, 10 * s, 20 * s, 40 * s, 80 * s, 150 * s, 150 * s}},
		{time.Hour, 0.999, []time.Duration{7495 * time.Millisecond, 14990 * time.Millisecond, 29980 * time.Millisecond, 59960 * time.Millisecond,
			119920 * time.Millisecond, 239840 * time.Millisecond, 300 * s, 300 * s}},
	} {
		r := &Runner{jitter: func() float64 { return tc.jitter }}
		var got []time.Duration
		for n := range tc.want {
			got = append(got, r.backoff(n, min(tc.interval, retryMax)).Round(time.Millisecond))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("interval %s, jitter %g: %v, want %v", tc.interval, tc.jitter, got, tc.want)
		}
	}
}

// TestRetryAfterRestart: a deletion whose purge was not accepted before a
// restart is in the gauge from Recover at start-up and is retried by the
// new Loop after 5 s, not at its first hourly run.
func TestRetryAfterRestart(t *testing.T) {
	f := newRetryFixture(t, &purger{down: true})
	f.p.mu.Lock()
	f.p.down = false
	f.p.mu.Unlock()
	c, reg := newClock(), prometheus.NewRegistry()
	r2 := f.runner(t, `{"channels": {"dev": {"keep_last": 1}}}`, func(cfg *Config) {
		cfg.Purger, cfg.After, cfg.Registerer = f.p, c.after, reg
	})
	if err := r2.Recover(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if n, oldest := r2.PendingPurges(); n != 1 || !oldest.Equal(f.now) {
		t.Fatalf("after restart: %d pending purges, oldest %s; want 1 from %s", n, oldest, f.now)
	}
	f.r, f.clock, f.reg = r2, c, reg
	f.loop(t)
	w := f.clock.next(t)
	if w.d < 2500*time.Millisecond || w.d >= 7500*time.Millisecond {
		t.Fatalf("first wait after restart %s, want 5s ± jitter", w.d)
	}
	w.fire <- time.Time{}
	deadline := time.Now().Add(10 * time.Second)
	for f.journal(t) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the journal was not finished after the restart")
		}
		time.Sleep(time.Millisecond)
	}
	f.metrics(t, 0, 0)
	f.cat.mu.Lock()
	events := len(f.cat.appended)
	f.cat.mu.Unlock()
	if f.p.count() != 2 || events != 1 {
		t.Fatalf("%d purge calls and %d events, want 2 and 1", f.p.count(), events)
	}
}

// TestAcceptedPurgeIsNotAskedAgain: once the broker accepted a purge, a
// catalog that will not log the deletion keeps the journal but not the
// purge pending, and the run that logs it does not purge again.
func TestAcceptedPurgeIsNotAskedAgain(t *testing.T) {
	f := newFixture(t)
	gone := f.publish(t, "app", "1", "dev", "app 1", 2*time.Hour)
	f.publish(t, "app", "2", "dev", "app 2", time.Hour)
	p := &purger{}
	r := f.runner(t, `{"channels": {"dev": {"keep_last": 1}}}`, func(c *Config) { c.Purger = p })
	f.cat.down["AppendEvent"] = true
	if _, err := r.Run(t.Context(), false); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("run with the catalog down: %v, want ErrUnavailable", err)
	}
	if n, _ := r.PendingPurges(); n != 0 || r.pending() != 1 {
		t.Fatalf("%d pending purges, %d journalled; want 0 and 1", n, r.pending())
	}
	// A restarted publisher reads the same from the journal.
	r = f.runner(t, `{"channels": {"dev": {"keep_last": 1}}}`, func(c *Config) { c.Purger = p })
	if err := r.Recover(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if n, _ := r.PendingPurges(); n != 0 || r.pending() != 1 {
		t.Fatalf("after restart: %d pending purges, %d journalled; want 0 and 1", n, r.pending())
	}
	f.cat.down["AppendEvent"] = false
	if _, err := r.Run(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if len(p.calls) != 1 || len(f.cat.appended) != 1 || f.cat.appended[0].GetSubjectDigest() != gone || r.pending() != 0 {
		t.Fatalf("%d purge calls, events %v, %d journalled; want 1 call, one event about %s, none", len(p.calls), f.cat.appended, r.pending(), gone)
	}
}
