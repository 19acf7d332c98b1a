// Package batch gathers concurrent calls into batches without a timer.
package batch

import (
	"context"
	"errors"
	"runtime"
	"sync"
)

// Queue sends items in batches through one function. Nothing waits on a
// timer: an item goes out at once while fewer than maxInFlight batches are
// outstanding, and otherwise joins the next batch, which leaves the moment
// one returns. Under light load that is one item per batch; under heavy
// load, batches of up to maxBatch. It is safe for concurrent use.
type Queue[T, R any] struct {
	send        func(ctx context.Context, items []T) ([]R, error)
	maxInFlight int
	maxBatch    int

	mu       sync.Mutex
	inFlight int
	pending  []*call[T, R]
}

type call[T, R any] struct {
	ctx  context.Context
	item T
	res  R
	err  error
	done chan struct{}
}

// New returns a queue calling send with at most maxBatch items, at most
// maxInFlight calls at a time. send must return one result per item, in
// order, or an error for the whole batch. It gets the first caller's
// context without its cancellation: a batch outlives any one caller.
func New[T, R any](maxInFlight, maxBatch int, send func(ctx context.Context, items []T) ([]R, error)) *Queue[T, R] {
	return &Queue[T, R]{send: send, maxInFlight: max(1, maxInFlight), maxBatch: max(1, maxBatch)}
}

// Do queues item and waits for its result. A caller whose context ends
// gets ctx.Err(); if its batch had not left yet, the item is dropped from it.
func (q *Queue[T, R]) Do(ctx context.Context, item T) (R, error) {
	c := &call[T, R]{ctx: ctx, item: item, done: make(chan struct{})}
	q.mu.Lock()
	q.pending = append(q.pending, c)
	q.dispatchLocked()
	q.mu.Unlock()
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		var zero R
		return zero, ctx.Err()
	}
}

// Waiting is how many items are queued and not yet sent.
func (q *Queue[T, R]) Waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// Busy reports whether a batch is outstanding.
func (q *Queue[T, R]) Busy() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.inFlight > 0
}

func (q *Queue[T, R]) dispatchLocked() {
	for q.inFlight < q.maxInFlight && len(q.pending) > 0 {
		n := min(len(q.pending), q.maxBatch)
		b := q.pending[:n:n]
		q.pending = q.pending[n:]
		q.inFlight++
		go q.run(b)
	}
}

func (q *Queue[T, R]) run(b []*call[T, R]) {
	live := b[:0]
	for _, c := range b {
		if err := c.ctx.Err(); err != nil {
			c.err = err
			close(c.done)
		} else {
			live = append(live, c)
		}
	}
	if len(live) > 0 {
		items := make([]T, len(live))
		for i, c := range live {
			items[i] = c.item
		}
		res, err := q.send(context.WithoutCancel(live[0].ctx), items)
		if err == nil && len(res) != len(live) {
			err = ErrShort
		}
		for i, c := range live {
			if err != nil {
				c.err = err
			} else {
				c.res = res[i]
			}
			close(c.done)
		}
		// Let the callers just woken run before this slot is free again:
		// a caller that sends its next item at once then joins the next
		// batch with the others instead of taking the slot alone and
		// leaving the rest a whole round behind. Yield until as many items
		// wait as this batch held, or once per item of it: callers that do
		// not come back cost a few yields, never a wait.
		for range live {
			q.mu.Lock()
			n := len(q.pending)
			q.mu.Unlock()
			if n >= len(live) {
				break
			}
			runtime.Gosched()
		}
	}
	q.mu.Lock()
	q.inFlight--
	q.dispatchLocked()
	q.mu.Unlock()
}

// ErrShort is returned to every item of a batch whose send returned a
// result count other than the item count.
var ErrShort = errors.New("batch: send returned a result count other than the item count")
