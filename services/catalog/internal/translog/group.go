package translog

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/transparency-dev/tessera"
)

// groupCommit collects the entries that arrive while Tessera writes a
// batch, so that the next batch holds all of them (decisions 0068, 0118).
// Tessera's own queue cuts a batch when its oldest entry reaches its age,
// whether or not the previous batch is still being written; entries that
// arrive spread out (one gRPC call each) then make many small batches,
// each costing the same renames and fsyncs. Here one batch is in flight at
// a time, and the group decides when a batch is complete: it takes
// everything that waited, then keeps taking arrivals while they keep
// coming (no gap longer than gap) for at most join, and only then hands
// the whole batch to Tessera, whose own age is short (tesseraAge) so that
// it cuts the batch at once. A lone entry waits one gap; appenders that
// each wait for their previous entry (gRPC callers) come back within the
// join and stay in one batch instead of splitting into alternating ones.
// The gap counts only once some entry has arrived since the last batch was
// answered: entries that waited during a write are held, up to join, for
// the callers of that write to come back, since a caller's round trip
// (the answer, its next call) is often longer than a gap. Otherwise two
// groups of callers, each arriving while the other's batch is written,
// would alternate for good, each batch paying Tessera's files and fsyncs
// for half of them (decision 0120).
type groupCommit struct {
	max int
	// join bounds how long a batch takes arrivals after the sequencer
	// starts it; gap is the longest pause between arrivals it waits out.
	join, gap time.Duration
	wake      chan struct{}

	mu      sync.Mutex
	pending []*pendingEntry

	// batches counts the groups handed to Tessera.
	batches atomic.Uint64
	// arrivals counts the entries ever added.
	arrivals atomic.Uint64
}

// tesseraAge is the batch age given to Tessera's queue: the group hands a
// complete batch over in one loop of Add calls, so Tessera need not wait
// for more. A batch whose Adds take longer (the goroutine preempted) is
// cut in two, which costs a second write, not correctness.
const tesseraAge = 200 * time.Microsecond

type pendingEntry struct {
	entry *tessera.Entry
	done  chan sequenced
}

type sequenced struct {
	index uint64
	err   error
}

func (g *groupCommit) add(e *pendingEntry) {
	g.mu.Lock()
	g.pending = append(g.pending, e)
	g.arrivals.Add(1)
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// take removes and returns up to limit waiting entries, oldest first.
func (g *groupCommit) take(limit int) []*pendingEntry {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := min(len(g.pending), limit)
	if n == 0 {
		return nil
	}
	batch := g.pending[:n:n]
	if n == len(g.pending) {
		g.pending = nil
	} else {
		g.pending = g.pending[n:]
	}
	return batch
}

// sequencer hands each group to Tessera and waits until Tessera has
// sequenced it before handing over the next. It runs until the log closes;
// entries still waiting then fail as not sequenced.
func (l *Log) sequencer(ctx context.Context) {
	g := &l.group
	futures := make([]tessera.IndexFuture, 0, g.max)
	joinTimer := time.NewTimer(time.Hour)
	joinTimer.Stop()
	// answered is the arrivals count when the last batch was answered.
	var answered uint64
	for {
		select {
		case <-g.wake:
		case <-l.closing:
			for _, e := range g.take(math.MaxInt) {
				e.done <- sequenced{err: fmt.Errorf("%w: shutting down", ErrUnavailable)}
			}
			return
		}
		for batch := g.take(g.max); batch != nil; batch = g.take(g.max) {
			g.batches.Add(1)
			// Arrivals join while they keep coming, up to join after the
			// batch started.
			end := time.Now().Add(g.join)
		join:
			for len(batch) < g.max {
				// Until one of the callers just answered (or anyone else)
				// comes back, wait for them up to join; then only while
				// arrivals keep coming.
				left := time.Until(end)
				if answered == 0 || g.arrivals.Load() > answered {
					left = min(g.gap, left)
				}
				if left <= 0 {
					break
				}
				joinTimer.Reset(left)
				select {
				case <-g.wake:
					joinTimer.Stop()
					batch = append(batch, g.take(g.max-len(batch))...)
				case <-joinTimer.C:
					break join
				}
			}
			futures = futures[:0]
			for _, e := range batch {
				futures = append(futures, l.appender.Add(ctx, e.entry))
			}
			results := make([]sequenced, len(batch))
			var top uint64
			for i, f := range futures {
				idx, err := f()
				if err != nil {
					results[i].err = fmt.Errorf("%w: add entry: %v", ErrUnavailable, err)
					continue
				}
				results[i].index = idx.Index
				top = max(top, idx.Index+1)
			}
			l.quiet.touch()
			if top > 0 {
				// Someone will want a checkpoint that covers them.
				l.need(top)
			}
			answered = g.arrivals.Load()
			for i, e := range batch {
				e.done <- results[i]
			}
		}
	}
}
