package translog

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/transparency-dev/tessera"
)

// quietRefresh is how long Tessera's metrics loop may see a cached tree size
// while nothing is appended.
const quietRefresh = 10 * time.Second

// quietDriver wraps a Tessera driver so that the LogReader Tessera keeps for
// itself answers IntegratedSize and NextIndex from memory while nothing is
// appended. Tessera polls both every 100 ms for its metrics, forever, each
// poll reading and decoding the tree state file twice: that loop was most
// of an idle catalog's CPU (decision 0017). The log itself reads through
// the driver's own reader (raw), never through the cache.
type quietDriver struct {
	d      tessera.Driver
	reader *quietReader
}

func (q *quietDriver) Appender(ctx context.Context, o *tessera.AppendOptions) (*tessera.Appender, tessera.LogReader, error) {
	lc, ok := q.d.(interface {
		Appender(context.Context, *tessera.AppendOptions) (*tessera.Appender, tessera.LogReader, error)
	})
	if !ok {
		return nil, nil, fmt.Errorf("driver %T does not implement Tessera's appender lifecycle", q.d)
	}
	a, r, err := lc.Appender(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	q.reader = &quietReader{LogReader: r, raw: r}
	q.reader.dirty.Store(true)
	return a, q.reader, nil
}

// quietReader is a LogReader whose IntegratedSize and NextIndex are read
// afresh only after an append (touch) or quietRefresh; every other method
// is the driver's.
type quietReader struct {
	tessera.LogReader
	raw   tessera.LogReader
	dirty atomic.Bool

	mu         sync.Mutex
	size, next uint64
	sizeAt     time.Time
	nextAt     time.Time
}

// touch marks the cached values stale: an entry was sequenced.
func (q *quietReader) touch() { q.dirty.Store(true) }

func (q *quietReader) IntegratedSize(ctx context.Context) (uint64, error) {
	return q.cached(ctx, &q.size, &q.sizeAt, q.raw.IntegratedSize)
}

func (q *quietReader) NextIndex(ctx context.Context) (uint64, error) {
	return q.cached(ctx, &q.next, &q.nextAt, q.raw.NextIndex)
}

func (q *quietReader) cached(ctx context.Context, v *uint64, at *time.Time, read func(context.Context) (uint64, error)) (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.dirty.Swap(false) {
		// Both values are stale; the next read of the other one too.
		q.sizeAt, q.nextAt = time.Time{}, time.Time{}
	}
	if !at.IsZero() && time.Since(*at) < quietRefresh {
		return *v, nil
	}
	n, err := read(ctx)
	if err != nil {
		return 0, err
	}
	*v, *at = n, time.Now()
	return n, nil
}
