package approvals_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/services/signer/internal/approvals"
	"github.com/custody-dev/custody/services/signer/internal/audit"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

// fakeClock moves only when told to; waitTimers lets a test know that a
// waiter has armed its timers, instead of sleeping.
type fakeClock struct {
	mu     sync.Mutex
	cond   *sync.Cond
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c  *fakeClock
	at time.Time
	ch chan time.Time
}

func newClock() *fakeClock {
	c := &fakeClock{now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) approvals.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	c.cond.Broadcast()
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	i := slices.Index(t.c.timers, t)
	if i < 0 {
		return false
	}
	t.c.timers = slices.Delete(t.c.timers, i, i+1)
	t.c.cond.Broadcast()
	return true
}

// Advance moves the clock and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool {
		if t.at.After(c.now) {
			return false
		}
		t.ch <- c.now
		return true
	})
	c.cond.Broadcast()
}

// waitTimers blocks until exactly n timers are armed (each waiter arms two:
// its maximum wait and the request's expiry) or *returned is set under c.mu.
func (c *fakeClock) waitTimers(n int, returned *bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.timers) != n && !*returned {
		c.cond.Wait()
	}
}

func (c *fakeClock) setReturned(returned *bool) {
	c.mu.Lock()
	*returned = true
	c.cond.Broadcast()
	c.mu.Unlock()
}

// fakeLog is an audit log that can be down.
type fakeLog struct {
	mu     sync.Mutex
	events []audit.Event
	down   bool
}

func (f *fakeLog) Log(_ context.Context, e audit.Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return fmt.Errorf("%w: append %s event to the catalog: connection refused", audit.ErrUnavailable, e.Type)
	}
	f.events = append(f.events, e)
	return nil
}

func (f *fakeLog) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *fakeLog) types() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.events {
		out = append(out, e.Type)
	}
	return out
}

func (f *fakeLog) last() audit.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.events[len(f.events)-1]
}

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	builder = "spiffe://custody.test/builder/ci"
)

var td = spiffeid.RequireTrustDomainFromString("custody.test")

func id(path string) spiffeid.ID { return spiffeid.RequireFromPath(td, path) }

var (
	alice = id("/approver/alice")
	bob   = id("/approver/bob")
	carol = id("/approver/carol")
)

func subject() server.ApprovalSubject {
	return server.ApprovalSubject{Name: "app", Version: "1.0.0", Digest: digestA, Channel: "prod", KeyName: "artifact",
		BuilderID: builder, SourceRepo: "https://git.example/app", SourceCommit: "abc123"}
}

func baseConfig(t *testing.T, clock *fakeClock) approvals.Config {
	return approvals.Config{
		Quorum: map[string]int{"prod": 2, "staging": 1, "dev": 0}, TrustDomain: td,
		ApprovalTTL: approvals.DefaultApprovalTTL, RequestTTL: approvals.DefaultRequestTTL, MaxWait: approvals.DefaultMaxWait,
		StateDir: t.TempDir(), Clock: clock,
	}
}

// fixture is a Service on a fake clock and a fake log.
type fixture struct {
	svc   *approvals.Service
	clock *fakeClock
	log   *fakeLog
	cfg   approvals.Config
}

func newFixture(t *testing.T, edit ...func(*approvals.Config)) *fixture {
	t.Helper()
	clock := newClock()
	cfg := baseConfig(t, clock)
	for _, e := range edit {
		e(&cfg)
	}
	log := &fakeLog{}
	svc, err := approvals.Open(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, clock: clock, log: log, cfg: cfg}
}

// await starts Await in the background and returns its result channel once
// the waiter is waiting (timers armed on top of the `armed` already there).
func (f *fixture) await(t *testing.T, ctx context.Context, s server.ApprovalSubject, armed int) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	returned := new(bool)
	go func() {
		err := f.svc.Await(ctx, s)
		f.clock.setReturned(returned)
		done <- err
	}()
	f.clock.waitTimers(armed+2, returned)
	return done
}

// pendingID is the id of the one pending request.
func (f *fixture) pendingID(t *testing.T) string {
	t.Helper()
	rs := f.svc.List(false)
	if len(rs) != 1 {
		t.Fatalf("%d pending requests, want 1: %+v", len(rs), rs)
	}
	return rs[0].ID
}
