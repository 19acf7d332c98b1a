package keys

import (
	"context"
	"sync"
)

// Coalescer wraps a back end that signs in batches: concurrent Sign calls
// for the same key version are gathered into batch requests. Nothing waits
// on a timer: a call goes out at once if fewer than MaxInFlight batches are
// outstanding for its key version, and otherwise joins the next batch,
// which leaves as soon as one finishes. Under light load that is one
// message per request; under heavy load, batches of up to MaxBatch.
type Coalescer struct {
	Backend
	batch       BatchSigner
	maxInFlight int
	maxBatch    int

	mu     sync.Mutex
	queues map[queueKey]*queue
}

type queueKey struct {
	name    string
	version int
}

type queue struct {
	inFlight int
	pending  []*request
}

type request struct {
	ctx  context.Context
	msg  []byte
	sig  []byte
	err  error
	done chan struct{}
}

// NewCoalescer returns b with coalesced signing if b is a BatchSigner, and
// b itself otherwise.
func NewCoalescer(b Backend, maxInFlight, maxBatch int) Backend {
	bs, ok := b.(BatchSigner)
	if !ok {
		return b
	}
	return &Coalescer{Backend: b, batch: bs, maxInFlight: max(1, maxInFlight), maxBatch: max(1, maxBatch), queues: map[queueKey]*queue{}}
}

// Sign queues message and waits for its signature.
func (c *Coalescer) Sign(ctx context.Context, name string, version int, message []byte) ([]byte, error) {
	r := &request{ctx: ctx, msg: message, done: make(chan struct{})}
	k := queueKey{name, version}
	c.mu.Lock()
	q := c.queues[k]
	if q == nil {
		q = &queue{}
		c.queues[k] = q
	}
	q.pending = append(q.pending, r)
	c.dispatchLocked(k, q)
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.sig, r.err
	case <-ctx.Done():
		// The batch may still sign the message; the result is dropped.
		return nil, ctx.Err()
	}
}

// dispatchLocked starts batches while there is room.
func (c *Coalescer) dispatchLocked(k queueKey, q *queue) {
	for q.inFlight < c.maxInFlight && len(q.pending) > 0 {
		n := min(len(q.pending), c.maxBatch)
		batch := q.pending[:n:n]
		q.pending = q.pending[n:]
		q.inFlight++
		go c.run(k, q, batch)
	}
	if q.inFlight == 0 && len(q.pending) == 0 {
		delete(c.queues, k)
	}
}

func (c *Coalescer) run(k queueKey, q *queue, batch []*request) {
	// Drop requests whose callers gave up before the batch left.
	live := batch[:0]
	for _, r := range batch {
		if r.ctx.Err() == nil {
			live = append(live, r)
		} else {
			r.err = r.ctx.Err()
			close(r.done)
		}
	}
	if len(live) > 0 {
		// The batch outlives any one caller: use the first caller's
		// values but not its cancellation.
		ctx := context.WithoutCancel(live[0].ctx)
		var sigs [][]byte
		var err error
		if len(live) == 1 {
			var sig []byte
			sig, err = c.Backend.Sign(ctx, k.name, k.version, live[0].msg)
			sigs = [][]byte{sig}
		} else {
			msgs := make([][]byte, len(live))
			for i, r := range live {
				msgs[i] = r.msg
			}
			sigs, err = c.batch.SignBatch(ctx, k.name, k.version, msgs)
		}
		for i, r := range live {
			if err != nil {
				r.err = err
			} else {
				r.sig = sigs[i]
			}
			close(r.done)
		}
	}
	c.mu.Lock()
	q.inFlight--
	c.dispatchLocked(k, q)
	c.mu.Unlock()
}
