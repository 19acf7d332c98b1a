package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/translog"
)

// indexer brings the store's events up to date from the log, which is
// their write-ahead record: an event is acknowledged once Tessera has
// durably sequenced it, and nothing is written to the store on that path.
// The indexer reads the log from the store's indexed size onwards, in index
// order, proves the batch's events against one served checkpoint, and
// stores them with the new indexed size in one transaction
// (Store.IndexEvents). A crash before that commit leaves the range to be
// read again; a crash after leaves nothing to do; rows are keyed by log
// index, so a range indexed twice stores each event once. Entries of other
// kinds (artifact.published, artifact.resigned) are skipped: their rows
// are written first, by their own protocol (see Catalog).
//
// It runs only while the log is ahead of the store: it sleeps, with no
// timer, until an event is sequenced. A failed batch (the co-signer or the
// store down) is retried with a growing pause, up to indexRetryMax; what is
// left at Close is indexed by Recover at the next start.
type indexer struct {
	c *Catalog

	mu sync.Mutex
	// loaded says next was read from the store.
	loaded bool
	// next is the store's indexed size: every event below it is stored.
	next uint64
	// target is the log size the indexer works towards.
	target uint64
	// err is why the last batch failed; nil while the indexer keeps up.
	err error
	// storeErr is set while the store fails: new events are refused then
	// (fail closed), rather than piling up in the log unindexed.
	storeErr error
	// progress is closed and replaced whenever next or err changes.
	progress chan struct{}
	// waiters wait for the evidence of one event, by log index.
	waiters map[uint64]chan finishResult
	// recent holds the events this catalog is sequencing or has sequenced
	// and the indexer has not read back yet, by leaf, at most maxRecent: an
	// entry read back from the log whose bytes are the leaf of a recent
	// event is not parsed again, since that leaf was marshalled from the
	// event's fields. Anything else read from the log is parsed and
	// validated.
	recent map[string]*Event

	wake    chan struct{}
	closing chan struct{}
	done    chan struct{}
	once    sync.Once
}

type finishResult struct {
	p   *translog.Proved
	err error
}

// indexRetryMax is the longest pause between two attempts of a failed
// batch.
const indexRetryMax = 2 * time.Second

// indexBatch bounds the entries read and proved against one checkpoint at
// once.
const indexBatch = 4096

func newIndexer(c *Catalog) *indexer {
	ix := &indexer{c: c, progress: make(chan struct{}), waiters: map[uint64]chan finishResult{}, recent: map[string]*Event{},
		wake: make(chan struct{}, 1), closing: make(chan struct{}), done: make(chan struct{})}
	go ix.loop()
	return ix
}

// maxBacklog bounds how far the log may run ahead of the store before new
// events are refused.
const maxBacklog = 1 << 20

// admit returns ErrUnavailable if the store is failing or too far behind
// the log to take more events now.
func (ix *indexer) admit() error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.storeErr != nil {
		return unavailable("the catalog database does not store events now; retry when it is back", ix.storeErr)
	}
	if ix.target-min(ix.next, ix.target) > maxBacklog {
		return fmt.Errorf("%w: %d logged events wait to be stored; retry shortly", ErrUnavailable, ix.target-ix.next)
	}
	return nil
}

// maxRecent bounds the events kept in recent: about 64 MiB with leaves
// of 1 KiB.
const maxRecent = 1 << 16

// remember keeps a copy of e, whose leaf is about to be sequenced, for
// the indexer, and returns the function that drops it if the leaf was not
// sequenced. If recent is full, or holds the same leaf, the indexer will
// parse this one.
func (ix *indexer) remember(e *Event) (forget func()) {
	key := string(e.Entry.Leaf)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if _, ok := ix.recent[key]; ok || len(ix.recent) >= maxRecent {
		return func() {}
	}
	r := *e
	ix.recent[key] = &r
	return func() {
		ix.mu.Lock()
		if ix.recent[key] == &r {
			delete(ix.recent, key)
		}
		ix.mu.Unlock()
	}
}

// recalled removes and returns the recent event whose leaf is leaf, or nil.
func (ix *indexer) recalled(leaf []byte) *Event {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	e, ok := ix.recent[string(leaf)]
	if ok {
		delete(ix.recent, string(leaf))
	}
	return e
}

// sequenced tells the indexer that the log holds at least size entries.
func (ix *indexer) sequenced(size uint64) {
	ix.mu.Lock()
	grew := size > ix.target
	ix.target = max(ix.target, size)
	ix.mu.Unlock()
	if grew {
		select {
		case ix.wake <- struct{}{}:
		default:
		}
	}
}

// await returns a channel that receives the evidence of the event at
// index once it is stored, or the error of the batch that failed to store
// it. It returns nil if the event is already stored.
func (ix *indexer) await(index uint64) <-chan finishResult {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.loaded && index < ix.next {
		return nil
	}
	ch := make(chan finishResult, 1)
	ix.waiters[index] = ch
	return ch
}

// forget drops the waiter of index, if any.
func (ix *indexer) forget(index uint64) {
	ix.mu.Lock()
	delete(ix.waiters, index)
	ix.mu.Unlock()
}

// catchUp waits until the store is indexed to size, or a batch fails (its
// error), or ctx ends.
func (ix *indexer) catchUp(ctx context.Context, size uint64) error {
	ix.sequenced(size)
	// Wake it even if size is not news: it may not have read the store's
	// indexed size yet.
	select {
	case ix.wake <- struct{}{}:
	default:
	}
	for {
		ix.mu.Lock()
		next, loaded, err, progress := ix.next, ix.loaded, ix.err, ix.progress
		ix.mu.Unlock()
		if loaded && next >= size {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return unavailable("index the log", ctx.Err())
		case <-ix.closing:
			return unavailable("index the log", errClosing)
		}
	}
}

var errClosing = errors.New("catalog closing")

// close stops the loop; what is not indexed yet is indexed at the next
// start.
func (ix *indexer) close() {
	ix.once.Do(func() { close(ix.closing) })
	<-ix.done
}

func (ix *indexer) loop() {
	defer close(ix.done)
	delay := 10 * time.Millisecond
	for {
		select {
		case <-ix.closing:
			return
		case <-ix.wake:
		}
		for {
			err := ix.step()
			idle := err == errNothingToDo
			if idle {
				err = nil
			}
			ix.mu.Lock()
			ix.err = err
			close(ix.progress)
			ix.progress = make(chan struct{})
			ix.mu.Unlock()
			if idle {
				break
			}
			if err == nil {
				delay = 10 * time.Millisecond
				continue
			}
			select {
			case <-ix.closing:
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, indexRetryMax)
		}
	}
}

var errNothingToDo = errors.New("nothing to index")

// step indexes the next batch.
func (ix *indexer) step() error {
	ctx, cancel := context.WithTimeout(context.Background(), finishTimeout)
	defer cancel()
	ix.mu.Lock()
	loaded, from, target := ix.loaded, ix.next, ix.target
	ix.mu.Unlock()
	if !loaded {
		n, err := ix.c.store.IndexedSize(ctx)
		if err != nil {
			ix.c.logger.WarnContext(ctx, "read the store's indexed log size; retrying", slog.Any("error", err))
			ix.mu.Lock()
			ix.storeErr = err
			ix.mu.Unlock()
			return unavailable("read indexed log size", err)
		}
		ix.mu.Lock()
		ix.loaded, ix.next, from = true, n, n
		ix.mu.Unlock()
	}
	if from >= target {
		return errNothingToDo
	}
	to := min(target, from+indexBatch)
	events, err := ix.index(ctx, from, to)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if err != nil {
		level := slog.LevelWarn
		if errors.Is(err, ErrIntegrity) {
			level = slog.LevelError
		}
		ix.c.logger.Log(ctx, level, "index log entries; retrying", slog.Uint64("from", from), slog.Uint64("to", to), slog.Any("error", err))
		for i := from; i < to; i++ {
			if ch, ok := ix.waiters[i]; ok {
				ch <- finishResult{err: err}
				delete(ix.waiters, i)
			}
		}
		return err
	}
	ix.next, ix.storeErr = to, nil
	for _, e := range events {
		if ch, ok := ix.waiters[e.Entry.Index]; ok {
			ch <- finishResult{p: &translog.Proved{Index: e.Entry.Index, Proof: e.Entry.Proof, Checkpoint: e.Entry.Checkpoint}}
			delete(ix.waiters, e.Entry.Index)
		}
	}
	return nil
}

// index stores the events among the log's entries [from, to), proved, and
// raises the indexed size to to.
func (ix *indexer) index(ctx context.Context, from, to uint64) ([]*Event, error) {
	// Read through the integrated tree's bundles: a partial bundle of the
	// size to may never have been written.
	size, err := ix.c.log.Size(ctx)
	if err != nil {
		return nil, logError("read log size", err)
	}
	if size < to {
		return nil, fmt.Errorf("%w: the log has %d entries, fewer than the %d sequenced", ErrIntegrity, size, to)
	}
	leaves, err := ix.c.log.Entries(ctx, from, to-from, size)
	if err != nil {
		return nil, logError("read log entries", err)
	}
	var (
		events []*Event
		prove  []translog.Leaf
	)
	for i, leaf := range leaves {
		idx := from + uint64(i)
		if r := ix.recalled(leaf); r != nil {
			// The leaf this catalog marshalled from r's fields: parsing it
			// gives those fields back. Its proof is still built from the
			// log's tiles and verified against these bytes.
			events = append(events, &Event{Type: r.Type, Actor: r.Actor, SubjectDigest: r.SubjectDigest, Details: r.Details,
				CreatedAt: r.CreatedAt.UTC(), Entry: Entry{Leaf: leaf, SearchFrom: idx, Sequenced: true, Index: idx}})
			prove = append(prove, translog.Leaf{Index: idx, Bytes: leaf})
			continue
		}
		e, err := tlog.ParseEntry(leaf)
		if err != nil {
			return nil, fmt.Errorf("%w: log entry %d does not parse: %v", ErrIntegrity, idx, err)
		}
		if e.Type == tlog.TypeArtifactPublished || e.Type == tlog.TypeArtifactResigned {
			continue // stored before it was logged
		}
		events = append(events, &Event{Type: e.Type, Actor: e.Actor, SubjectDigest: e.Subject.Digest, Details: []byte(e.Details),
			CreatedAt: e.Time.UTC(), Entry: Entry{Leaf: leaf, SearchFrom: idx, Sequenced: true, Index: idx}})
		prove = append(prove, translog.Leaf{Index: idx, Bytes: leaf})
	}
	if len(events) > 0 {
		proved, errs, err := ix.c.log.ProveAll(ctx, prove)
		if err != nil {
			return nil, logError("prove events", err)
		}
		for i, e := range events {
			if errs[i] != nil {
				return nil, logError("prove event", errs[i])
			}
			e.Entry.Proof, e.Entry.Checkpoint = proved[i].Proof, proved[i].Checkpoint
		}
	}
	if err := ix.c.store.IndexEvents(ctx, events, to); err != nil {
		ix.mu.Lock()
		ix.storeErr = err
		ix.mu.Unlock()
		return nil, unavailable("store events", err)
	}
	return events, nil
}
