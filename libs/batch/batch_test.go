package batch_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/batch"
)

func TestConcurrentCallsShareBatches(t *testing.T) {
	gate := make(chan struct{})
	var calls, items atomic.Int64
	q := batch.New(1, 64, func(_ context.Context, in []int) ([]string, error) {
		calls.Add(1)
		items.Add(int64(len(in)))
		<-gate
		out := make([]string, len(in))
		for i, v := range in {
			out[i] = fmt.Sprint(v)
		}
		return out, nil
	})
	const n = 100
	var wg sync.WaitGroup
	got := make([]string, n)
	for i := range n {
		wg.Go(func() {
			r, err := q.Do(t.Context(), i)
			if err != nil {
				t.Error(err)
			}
			got[i] = r
		})
	}
	for q.Waiting()+int(items.Load()) != n { // the first batch holds the only slot
		runtime.Gosched()
	}
	close(gate)
	wg.Wait()
	for i, r := range got {
		if r != fmt.Sprint(i) {
			t.Fatalf("item %d got %q", i, r)
		}
	}
	if c := calls.Load(); c > 3 {
		t.Fatalf("%d calls for %d items: want the first, then the rest in batches of at most 64", c, n)
	}
}

func TestErrorsReachEveryItem(t *testing.T) {
	boom := errors.New("down")
	q := batch.New(2, 8, func(context.Context, []int) ([]int, error) { return nil, boom })
	if _, err := q.Do(t.Context(), 1); !errors.Is(err, boom) {
		t.Fatalf("got %v, want the batch error", err)
	}
	short := batch.New(2, 8, func(context.Context, []int) ([]int, error) { return nil, nil })
	if _, err := short.Do(t.Context(), 1); !errors.Is(err, batch.ErrShort) {
		t.Fatalf("got %v, want ErrShort", err)
	}
}

func TestCallerGivesUp(t *testing.T) {
	gate := make(chan struct{})
	var sent atomic.Int64
	q := batch.New(1, 8, func(_ context.Context, in []int) ([]int, error) {
		sent.Add(int64(len(in)))
		<-gate
		return in, nil
	})
	go q.Do(context.Background(), 1)
	for !q.Busy() {
		runtime.Gosched()
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := q.Do(ctx, 2); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want Canceled", err)
	}
	close(gate)
	if r, err := q.Do(t.Context(), 3); err != nil || r != 3 {
		t.Fatalf("after: %v, %v", r, err)
	}
	if s := sent.Load(); s != 2 {
		t.Fatalf("%d items sent, want 2: the abandoned one is dropped", s)
	}
}

// Callers in a closed loop (each sends its next item as soon as its last
// returns, as the gatekeeper's decisions and the catalog bench's
// appenders do) keep travelling together: a returning batch's callers
// queue their next items before its slot is free again, instead of the
// first of them taking a free slot alone and the rest waiting a whole
// round behind it.
func TestClosedLoopCallersStayTogether(t *testing.T) {
	const callers, rounds, inFlight, attempts = 64, 40, 1, 3
	// Without the hand-off the callers split into two alternating batches
	// of half each, in every attempt: the few that ran before the slot was
	// free take it, and the others wait for them. With it, a loaded
	// machine can still delay some callers past a batch now and then, so
	// the best of a few attempts is judged.
	want := float64(callers * 5 / 8)
	best := 0.0
	for range attempts {
		var calls, items atomic.Int64
		q := batch.New(inFlight, 256, func(_ context.Context, in []int) ([]int, error) {
			calls.Add(1)
			items.Add(int64(len(in)))
			time.Sleep(time.Millisecond) // the catalog writing the batch
			return in, nil
		})
		var wg sync.WaitGroup
		for c := range callers {
			wg.Go(func() {
				for r := range rounds {
					if _, err := q.Do(t.Context(), c*rounds+r); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		avg := float64(items.Load()) / float64(calls.Load())
		t.Logf("%d items in %d batches (%.1f a batch)", items.Load(), calls.Load(), avg)
		best = max(best, avg)
		if best >= want {
			return
		}
	}
	t.Errorf("at best %.1f items a batch from %d closed-loop callers and %d slot in %d attempts, want at least %.0f", best, callers, inFlight, attempts, want)
}
