package purge

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
)

// catalog pages its deployments as SearchArtifacts does: each page carries
// the deployments of its artifacts.
type catalog struct {
	pages [][]*catalogv1.Deployment
	down  bool
}

func (c *catalog) SearchArtifacts(_ context.Context, in *catalogv1.SearchArtifactsRequest, _ ...grpc.CallOption) (*catalogv1.SearchArtifactsResponse, error) {
	if c.down {
		return nil, status.Error(codes.Unavailable, "catalog down")
	}
	i := 0
	if in.GetPageToken() != "" {
		i, _ = strconv.Atoi(in.GetPageToken())
	}
	resp := &catalogv1.SearchArtifactsResponse{Deployments: c.pages[i]}
	if i+1 < len(c.pages) {
		resp.NextPageToken = strconv.Itoa(i + 1)
	}
	return resp, nil
}

type broker struct {
	mu    sync.Mutex // Run calls from its own goroutine
	down  bool
	calls []*cdnbrokerv1.PurgeDigestsRequest
}

func (b *broker) setDown(down bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down = down
}

func (b *broker) PurgeDigests(_ context.Context, in *cdnbrokerv1.PurgeDigestsRequest, _ ...grpc.CallOption) (*cdnbrokerv1.PurgeDigestsResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, in)
	if b.down {
		return nil, status.Error(codes.Unavailable, "broker down")
	}
	return &cdnbrokerv1.PurgeDigestsResponse{}, nil
}

func digest(i int) string { return fmt.Sprintf("sha256:%064x", i) }

// TestKillSwitchPurgeSurvivesABrokerThatIsDown: the purge is kept in its
// file while the broker is down, across a restart, and then asks for every
// deployed digest once, in batches, under reason kill-switch and the same
// reference; accepted, it is forgotten.
func TestKillSwitchPurgeSurvivesABrokerThatIsDown(t *testing.T) {
	c := &catalog{}
	var want []string
	for p := range 3 {
		var page []*catalogv1.Deployment
		for i := range 70 {
			n := p*70 + i
			page = append(page, &catalogv1.Deployment{Digest: digest(n), Environment: "prod"})
			want = append(want, digest(n))
		}
		page = append(page, &catalogv1.Deployment{Digest: digest(p * 70), Environment: "staging"}) // the same digest in another environment
		c.pages = append(c.pages, page)
	}
	b := &broker{down: true}
	path := filepath.Join(t.TempDir(), "stop.json.purges.json")
	q, err := Open(path, c, b, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Add("kill-switch-3", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := q.Add("kill-switch-3", time.Now()); err != nil || q.Pending() != 1 {
		t.Fatalf("Add again = %v, %d pending; want idempotent", err, q.Pending())
	}
	if err := q.Flush(t.Context()); err == nil || q.Pending() != 1 {
		t.Fatalf("Flush with the broker down = %v, %d pending; want an error and the purge kept", err, q.Pending())
	}
	// A restart.
	b.down = false
	b.calls = nil
	if q, err = Open(path, c, b, slog.New(slog.DiscardHandler)); err != nil || q.Pending() != 1 {
		t.Fatalf("reopen: %v, %d pending; want 1", err, q.Pending())
	}
	c.down = true
	if err := q.Flush(t.Context()); err == nil || q.Pending() != 1 || len(b.calls) != 0 {
		t.Fatalf("Flush with the catalog down = %v, %d pending, %d calls; want fail closed", err, q.Pending(), len(b.calls))
	}
	c.down = false
	if err := q.Flush(t.Context()); err != nil || q.Pending() != 0 {
		t.Fatalf("Flush = %v, %d pending", err, q.Pending())
	}
	var got []string
	for _, call := range b.calls {
		if call.GetReason() != Reason || call.GetReference() != "kill-switch-3" || len(call.GetDigests()) > batch {
			t.Fatalf("purge call %v", call)
		}
		got = append(got, call.GetDigests()...)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("purged %d digests, want the %d deployed, each once", len(got), len(want))
	}
	if q, err = Open(path, c, b, slog.New(slog.DiscardHandler)); err != nil || q.Pending() != 0 {
		t.Fatalf("reopen after the purge: %v, %d pending; want 0", err, q.Pending())
	}
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

// next is the wait Run asks for next; nothing within a second fails.
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

// TestRunBacksOffWhileTheBrokerRefuses: while the broker refuses, Run
// asks again after 5, 10, 20, 40 s, then every minute (jitter factor 1
// here); once it accepts, Run waits for nothing, and the next refusal
// starts again from 5 s.
func TestRunBacksOffWhileTheBrokerRefuses(t *testing.T) {
	b := &broker{down: true}
	q, err := Open(filepath.Join(t.TempDir(), "stop.json.purges.json"), &catalog{}, b, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := q.AddRevoked(digest(1), time.Now()); err != nil {
		t.Fatal(err)
	}
	ts := make(timers)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx, Clock{After: ts.after, Jitter: func() float64 { return 0.5 }}) }()
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
	// The sixth wait is under way; the broker accepts the retry it ends.
	tm := ts.next(t)
	if tm.d != time.Minute {
		t.Fatalf("seventh wait %v, want the cap, 1m", tm.d)
	}
	b.setDown(false)
	tm.fire <- time.Time{}
	for deadline := time.Now().Add(time.Second); q.Pending() != 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if q.Pending() != 0 {
		t.Fatal("the purge the broker accepted is still pending")
	}
	// A revocation while the broker refuses again: asked at once, then
	// after the first wait, not the last.
	b.setDown(true)
	if err := q.AddRevoked(digest(2), time.Now()); err != nil {
		t.Fatal(err)
	}
	if tm := ts.next(t); tm.d != 5*time.Second {
		t.Fatalf("first wait after the broker accepted = %v, want 5s (reset)", tm.d)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v at the end of ctx, want nil", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	tries := map[string]int{}
	for _, c := range b.calls {
		for _, d := range c.GetDigests() {
			tries[d]++
		}
	}
	// The first: at once, 6 refused retries, the accepted one (and perhaps
	// the pass Add kicked); the second: at once only.
	if tries[digest(1)] < 8 || tries[digest(1)] > 9 || tries[digest(2)] != 1 {
		t.Fatalf("broker asked %v, want the first 8 or 9 times, the second once", tries)
	}
}

func FuzzOpen(f *testing.F) {
	f.Add([]byte(`[{"reference":"kill-switch-1","queued":"2026-12-01T00:00:00Z"}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"x":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "p.json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		q, err := Open(path, &catalog{}, &broker{}, slog.New(slog.DiscardHandler))
		if err == nil && q.Pending() > maxPending {
			t.Fatalf("%d pending accepted", q.Pending())
		}
	})
}
