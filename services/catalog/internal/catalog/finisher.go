package catalog

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/custody-dev/custody/services/catalog/internal/translog"
)

// finisher proves sequenced events in batches and stores their evidence, in
// the background: an event acknowledged once sequenced gets its proof
// stored like one whose caller waited for it. Each batch waits for one
// served checkpoint covering all its entries, proves them all against it,
// and stores the evidence with concurrent (so group-committed) writes. An
// entry whose batch failed (the co-signer down, the store failing) is
// retried, with a growing pause, until the catalog closes; what is left
// then is finished by Recover at the next start, as its row is pending.
type finisher struct {
	c *Catalog

	mu      sync.Mutex
	queue   []*finishItem
	wake    chan struct{}
	closing chan struct{}
	done    chan struct{}
	once    sync.Once
}

// finishItem is one sequenced event row. done receives the evidence once
// stored, or the error of the first failed attempt; it is buffered and
// written once.
type finishItem struct {
	ref      Ref
	leaf     translog.Leaf
	done     chan finishResult
	notified bool
}

type finishResult struct {
	p   *translog.Proved
	err error
}

// finishRetryMax is the longest pause between two attempts of a failed
// batch.
const finishRetryMax = 2 * time.Second

// finishBatch bounds the entries proved against one checkpoint at once.
const finishBatch = 4096

func newFinisher(c *Catalog) *finisher {
	f := &finisher{c: c, wake: make(chan struct{}, 1), closing: make(chan struct{}), done: make(chan struct{})}
	go f.loop()
	return f
}

// add queues a sequenced row; the returned channel receives its result.
func (f *finisher) add(ref Ref, index uint64, leaf []byte) <-chan finishResult {
	it := &finishItem{ref: ref, leaf: translog.Leaf{Index: index, Bytes: leaf}, done: make(chan finishResult, 1)}
	f.mu.Lock()
	f.queue = append(f.queue, it)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
	return it.done
}

// close stops the loop; entries still queued stay pending in the store.
func (f *finisher) close() {
	f.once.Do(func() { close(f.closing) })
	<-f.done
}

func (f *finisher) loop() {
	defer close(f.done)
	delay := 10 * time.Millisecond
	for {
		select {
		case <-f.closing:
			return
		case <-f.wake:
		}
		for {
			f.mu.Lock()
			n := min(len(f.queue), finishBatch)
			batch := f.queue[:n:n]
			f.queue = f.queue[n:]
			f.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			failed := f.finish(batch)
			if len(failed) == 0 {
				delay = 10 * time.Millisecond
				continue
			}
			f.mu.Lock()
			f.queue = append(failed, f.queue...)
			f.mu.Unlock()
			select {
			case <-f.closing:
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, finishRetryMax)
		}
	}
}

// finish proves and stores one batch and returns the items that failed.
func (f *finisher) finish(batch []*finishItem) []*finishItem {
	ctx, cancel := context.WithTimeout(context.Background(), finishTimeout)
	defer cancel()
	leaves := make([]translog.Leaf, len(batch))
	for i, it := range batch {
		leaves[i] = it.leaf
	}
	proved, errs, err := f.c.log.ProveAll(ctx, leaves)
	if err != nil {
		f.c.logger.WarnContext(ctx, "prove sequenced events; retrying", slog.Int("events", len(batch)), slog.Any("error", err))
		for _, it := range batch {
			it.notify(finishResult{err: logError("prove event", err)})
		}
		return batch
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed []*finishItem
	)
	for i, it := range batch {
		if errs[i] != nil {
			f.c.logger.ErrorContext(ctx, "prove sequenced event", slog.Int64("id", it.ref.ID), slog.Uint64("index", it.leaf.Index), slog.Any("error", errs[i]))
			it.notify(finishResult{err: logError("prove event", errs[i])})
			mu.Lock()
			failed = append(failed, it)
			mu.Unlock()
			continue
		}
		p := proved[i]
		wg.Go(func() {
			if err := f.c.store.SetLogged(ctx, it.ref, p.Index, p.Proof, p.Checkpoint); err != nil {
				f.c.logger.WarnContext(ctx, "store event evidence; retrying", slog.Int64("id", it.ref.ID), slog.Any("error", err))
				it.notify(finishResult{err: unavailable("store log evidence", err)})
				mu.Lock()
				failed = append(failed, it)
				mu.Unlock()
				return
			}
			it.notify(finishResult{p: p})
		})
	}
	wg.Wait()
	return failed
}

func (it *finishItem) notify(r finishResult) {
	if it.notified {
		return
	}
	it.notified = true
	it.done <- r
}
