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
// batch, so that the next batch holds all of them (decision 0068).
// Tessera's own queue cuts a batch when its oldest entry reaches
// BatchMaxAge, whether or not the previous batch is still being written;
// entries that arrive spread out (one gRPC call each) then make many small
// batches, each costing the same renames and fsyncs. Here one batch is in
// flight at a time: a lone entry is handed to Tessera at once, and under
// load a batch is everything that arrived during the last one.
type groupCommit struct {
	max int
	// join is how long after handing a batch's first entries to Tessera
	// later arrivals still join it: less than Tessera's BatchMaxAge, which
	// then cuts the batch. Without it, appenders that each wait for their
	// previous entry (gRPC callers) split into two alternating batches.
	join time.Duration
	wake chan struct{}

	mu      sync.Mutex
	pending []*pendingEntry

	// batches counts the groups handed to Tessera.
	batches atomic.Uint64
}

type pendingEntry struct {
	leaf []byte
	done chan sequenced
}

type sequenced struct {
	index uint64
	err   error
}

func (g *groupCommit) add(e *pendingEntry) {
	g.mu.Lock()
	g.pending = append(g.pending, e)
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
			futures = futures[:0]
			for _, e := range batch {
				futures = append(futures, l.appender.Add(ctx, tessera.NewEntry(e.leaf)))
			}
			// Late arrivals join until Tessera is about to cut the batch.
			start := time.Now()
		join:
			for len(batch) < g.max {
				left := g.join - time.Since(start)
				if left <= 0 {
					break
				}
				joinTimer.Reset(left)
				select {
				case <-g.wake:
					joinTimer.Stop()
					more := g.take(g.max - len(batch))
					for _, e := range more {
						futures = append(futures, l.appender.Add(ctx, tessera.NewEntry(e.leaf)))
					}
					batch = append(batch, more...)
				case <-joinTimer.C:
					break join
				}
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
			for i, e := range batch {
				e.done <- results[i]
			}
		}
	}
}
