package keys

import (
	"context"
	"sync"

	"github.com/custody-dev/custody/libs/batch"
)

// Coalescer wraps a back end that signs in batches: concurrent Sign calls
// for the same key version are gathered into batch requests (libs/batch:
// no timer; at most MaxInFlight requests per key version, at most MaxBatch
// messages each). Under light load that is one message per request; under
// heavy load, batches of up to MaxBatch.
type Coalescer struct {
	Backend
	batch       BatchSigner
	maxInFlight int
	maxBatch    int

	mu     sync.Mutex
	queues map[queueKey]*batch.Queue[[]byte, []byte]
}

type queueKey struct {
	name    string
	version int
}

// NewCoalescer returns b with coalesced signing if b is a BatchSigner, and
// b itself otherwise.
func NewCoalescer(b Backend, maxInFlight, maxBatch int) Backend {
	bs, ok := b.(BatchSigner)
	if !ok {
		return b
	}
	return &Coalescer{Backend: b, batch: bs, maxInFlight: maxInFlight, maxBatch: maxBatch, queues: map[queueKey]*batch.Queue[[]byte, []byte]{}}
}

// Sign queues message with the others for its key version and waits for
// its signature.
func (c *Coalescer) Sign(ctx context.Context, name string, version int, message []byte) ([]byte, error) {
	k := queueKey{name, version}
	c.mu.Lock()
	q := c.queues[k]
	if q == nil {
		q = batch.New(c.maxInFlight, c.maxBatch, func(ctx context.Context, msgs [][]byte) ([][]byte, error) {
			if len(msgs) == 1 {
				sig, err := c.Backend.Sign(ctx, name, version, msgs[0])
				return [][]byte{sig}, err
			}
			return c.batch.SignBatch(ctx, name, version, msgs)
		})
		c.queues[k] = q
	}
	c.mu.Unlock()
	return q.Do(ctx, message)
}
