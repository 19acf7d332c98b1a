// Package translog runs the catalog's transparency log on Tessera and proves
// what it appends.
package translog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/client"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"

	"github.com/custody-dev/custody/libs/tlog"
)

var (
	// ErrUnavailable means the log could not do what was asked now: the
	// storage failed, Tessera pushed back or the log is shutting down. The
	// caller may retry.
	ErrUnavailable = errors.New("transparency log unavailable")
	// ErrIntegrity means the log produced something that does not verify: a
	// checkpoint not signed by its key, a proof that does not match, a leaf
	// that differs from what was appended. It is never retried away.
	ErrIntegrity = errors.New("transparency log integrity failure")
)

// Config configures Open.
type Config struct {
	// Dir is the directory of the Tessera POSIX log (tiles, entries,
	// checkpoint); unused with Driver.
	Dir string
	// Driver, if set, is the Tessera storage driver to use instead of the
	// POSIX one in Dir (OpenMySQL). CheckpointInterval must suit it.
	Driver tessera.Driver
	// SignerKey is the note signer key that signs checkpoints; its name is
	// the log's origin.
	SignerKey string
	// BatchMaxAge is the longest a batch takes arrivals once the sequencer
	// has started it (group commit: one batch is written at a time, and the
	// entries that arrive meanwhile start the next one). Arrivals keep
	// joining while none is more than an eighth of this age after the last;
	// a lone entry waits only that eighth. Entries that arrived during a
	// write wait up to this age for the first of the callers that write
	// answered to come back. Zero means 2ms.
	BatchMaxAge time.Duration
	// BatchMaxSize is the most entries sequenced at once. Zero means 1024:
	// a batch costs about the same fsyncs whatever its size, so under load
	// a larger batch is more entries per fsync.
	BatchMaxSize uint
	// CheckpointInterval is the least time between two checkpoints Tessera
	// publishes to its checkpoint file (the POSIX driver refuses less than
	// 100ms, the MySQL driver less than 1s). Entries do not wait for it: the
	// checkpoints they are proved against are signed from the integrated
	// tree as soon as they are sequenced. Zero means 1s, which keeps
	// Tessera's publication loop off an idle catalog's CPU.
	CheckpointInterval time.Duration
	// PollInterval is how often the checkpoint loop looks for a newly
	// published checkpoint while an entry waits for one. An idle log does
	// not poll. Zero means 5ms.
	PollInterval time.Duration
	// ServeGap is the least time between the starts of two checkpoints the
	// loop signs and has co-signed. Under a steady stream of entries each
	// one is a tree root from the tiles, a consistency proof, a signature
	// and a co-signer round trip; without a gap the loop ran back to back
	// and took CPU from the appends (decision 0017). An entry waits at most
	// this much longer for its checkpoint. Zero means 20ms; negative means
	// none.
	ServeGap time.Duration
	// Cosigner, if set, co-signs every published checkpoint, and only
	// co-signed checkpoints are served (Append, Prove, Checkpoint). Nil
	// serves checkpoints with the log's signature only: for tests and tools.
	Cosigner Cosigner
	// CosignWait bounds how long Append, Prove and Checkpoint wait for a
	// co-signed checkpoint before failing with ErrNotCosigned. Zero means
	// 10s.
	CosignWait time.Duration
	// CosignRetryMax is the longest pause between attempts while
	// co-signing fails. Zero means 1s.
	CosignRetryMax time.Duration
	// CosignRefresh is how often, with a Cosigner, the served checkpoint
	// is co-signed again while no entry waits, so that its cosignature/v1
	// timestamp is never much older than this on an idle log and
	// verifiers can bound its age (tlog.CheckFresh, ATTACKS.md #14). The
	// first one is co-signed at Open. Zero means 30s; negative never.
	CosignRefresh time.Duration
	Logger        *slog.Logger
}

// DefaultCosignRefresh is Config.CosignRefresh's default.
const DefaultCosignRefresh = 30 * time.Second

// Proved is an entry of the log with its inclusion proof against a signed
// checkpoint that covers it. Everything in it has been verified.
type Proved struct {
	Index      uint64
	Proof      [][]byte
	Checkpoint []byte
}

// Log is a Tessera log with a POSIX driver. Its methods are safe for
// concurrent use; appends are batched by Tessera, not serialized here. A
// background loop watches for published checkpoints while some entry waits
// for one, and with a Cosigner has each co-signed; it sleeps while nothing
// waits.
type Log struct {
	appender *tessera.Appender
	reader   tessera.LogReader
	// quiet is the reader Tessera's metrics loop polls; touched on every
	// sequenced entry.
	quiet    *quietReader
	shutdown func(context.Context) error
	cancel   context.CancelFunc
	verifier string
	origin   string
	signer   note.Signer
	logger   *slog.Logger

	cosigner       Cosigner
	cosignWait     time.Duration
	cosignRetryMax time.Duration
	cosignTimeout  time.Duration
	cosignRefresh  time.Duration
	poll           time.Duration
	serveGap       time.Duration
	loopDone       chan struct{}
	// wake is signalled when want grows.
	wake chan struct{}
	mu   sync.Mutex
	// want is the largest tree size some entry waits for a served
	// checkpoint of; guarded by mu.
	want uint64
	cs   cosignState
	// anchor is the largest checkpoint this log signed or verified (at
	// Open, Tessera's published one): every checkpoint signed later must
	// extend it. Guarded by mu.
	anchor *tlog.Checkpoint

	// group holds the entries waiting for the batch being written to end.
	group groupCommit

	closeOnce sync.Once
	closing   chan struct{}
}

// Open opens the log in cfg.Dir, creating it (with a signed checkpoint of the
// empty tree) if it does not exist. Close it to flush pending entries.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	cfg.SignerKey = strings.TrimSpace(cfg.SignerKey)
	signer, err := note.NewSigner(cfg.SignerKey)
	if err != nil {
		return nil, fmt.Errorf("log signer key: %w", err)
	}
	verifier, err := verifierKey(cfg.SignerKey)
	if err != nil {
		return nil, err
	}
	if cfg.BatchMaxAge == 0 {
		cfg.BatchMaxAge = 2 * time.Millisecond
	}
	if cfg.BatchMaxSize == 0 {
		cfg.BatchMaxSize = 1024
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = time.Second
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 5 * time.Millisecond
	}
	if cfg.ServeGap == 0 {
		cfg.ServeGap = 20 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CosignWait == 0 {
		cfg.CosignWait = 10 * time.Second
	}
	if cfg.CosignRetryMax == 0 {
		cfg.CosignRetryMax = time.Second
	}
	if cfg.CosignRefresh == 0 {
		cfg.CosignRefresh = DefaultCosignRefresh
	}
	// Tessera's background work (sequencing, checkpoint publication) runs
	// on this context, which must outlive every Add: it is cancelled only in
	// Close, after Tessera's own shutdown has published everything added.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	driver := cfg.Driver
	if driver == nil {
		if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
			cancel()
			return nil, fmt.Errorf("create log directory: %w", err)
		}
		d, err := posix.New(bg, posix.Config{Path: cfg.Dir})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("open POSIX log in %s: %w", cfg.Dir, err)
		}
		driver = d
	}
	opts := tessera.NewAppendOptions().
		WithCheckpointSigner(signer).
		WithBatching(cfg.BatchMaxSize, tesseraAge).
		WithCheckpointInterval(cfg.CheckpointInterval).
		// Republishing an unchanged tree keeps checkpoints fresh for
		// clients that check their age.
		WithCheckpointRepublishInterval(max(time.Minute, cfg.CheckpointInterval)).
		WithShutdownTimeout(10 * time.Second)
	quiet := &quietDriver{d: driver}
	appender, shutdown, _, err := tessera.NewAppender(bg, quiet, opts)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open log appender in %s: %w", cfg.Dir, err)
	}
	reader := quiet.reader.raw
	l := &Log{
		appender: appender,
		reader:   reader,
		quiet:    quiet.reader,
		shutdown: shutdown,
		cancel:   cancel,
		verifier: verifier,
		origin:   signer.Name(),
		signer:   signer,
		logger:   cfg.Logger,
		closing:  make(chan struct{}),

		cosigner:       cfg.Cosigner,
		cosignWait:     cfg.CosignWait,
		cosignRetryMax: cfg.CosignRetryMax,
		cosignTimeout:  min(cfg.CosignWait, 5*time.Second),
		cosignRefresh:  cfg.CosignRefresh,
		poll:           cfg.PollInterval,
		serveGap:       cfg.ServeGap,
		loopDone:       make(chan struct{}),
		wake:           make(chan struct{}, 1),
		cs:             cosignState{changed: make(chan struct{})},
		group:          groupCommit{max: int(cfg.BatchMaxSize), join: cfg.BatchMaxAge, gap: cfg.BatchMaxAge / 8, wake: make(chan struct{}, 1)},
	}
	if cfg.Driver != nil {
		// Other drivers publish the first checkpoint of a new log in the
		// background, not in NewAppender.
		awaitFirstCheckpoint(ctx, reader, 10*time.Second)
	}
	// Refuse to serve a log whose published checkpoint is not ours: the
	// key file and the data directory do not belong together.
	_, pub, err := l.published(ctx)
	if err != nil {
		close(l.loopDone)
		l.Close(ctx)
		return nil, err
	}
	l.anchor = pub
	go l.checkpointLoop(bg)
	go l.sequencer(bg)
	return l, nil
}

// Origin returns the log's origin, the name of its key.
func (l *Log) Origin() string { return l.origin }

// VerifierKey returns the note verifier key of the log's checkpoints.
func (l *Log) VerifierKey() string { return l.verifier }

// Size returns the number of entries in the log's integrated tree, which may
// be ahead of the latest checkpoint. Every entry appended after Size returns
// has an index at least as large.
func (l *Log) Size(ctx context.Context) (uint64, error) {
	n, err := l.reader.IntegratedSize(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: read tree size: %v", ErrUnavailable, err)
	}
	return n, nil
}

// Append adds leaf to the log, waits until a published checkpoint covers it,
// and returns its index with an inclusion proof against that checkpoint,
// verified. Concurrent calls share Tessera batches.
//
// Once Tessera has accepted the leaf, Append waits for its index even if ctx
// is done, so that when it returns the caller knows whether the leaf was
// sequenced: on error, a non-nil *Sequenced in the error chain carries the
// index of a leaf that is in the log but whose proof was not obtained.
func (l *Log) Append(ctx context.Context, leaf []byte) (*Proved, error) {
	idx, err := l.Sequence(ctx, leaf)
	if err != nil {
		return nil, err
	}
	p, err := l.Prove(ctx, idx, leaf)
	if err != nil {
		return nil, &Sequenced{Index: idx, Err: err}
	}
	return p, nil
}

// Sequence adds leaf to the log and returns its index once Tessera has
// sequenced it: the POSIX driver resolves an entry's future only after the
// entry bundle holding it and the tree state that counts it are written
// with O_SYNC and renamed into a synced directory, so the entry is durable
// and will be in every later checkpoint. Concurrent calls share Tessera
// batches. Once Tessera has accepted the leaf, Sequence waits for its index
// even if ctx is done, so an error means the leaf was not sequenced.
func (l *Log) Sequence(ctx context.Context, leaf []byte) (uint64, error) {
	if l.isClosing() {
		return 0, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	// The entry's hashes are computed here, in the caller's goroutine: the
	// sequencer's loop of Adds must stay shorter than tesseraAge, or
	// Tessera cuts the batch in two and writes it twice.
	r := &pendingEntry{entry: tessera.NewEntry(leaf), done: make(chan sequenced, 1)}
	l.group.add(r)
	select {
	case res := <-r.done:
		return res.index, res.err
	case <-l.closing:
		return 0, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
}

// Sequenced is the error of an Append whose leaf was sequenced at Index but
// could not be proved (e.g. ctx ended before a checkpoint covered it).
type Sequenced struct {
	Index uint64
	Err   error
}

func (e *Sequenced) Error() string {
	return fmt.Sprintf("entry %d sequenced but not proved: %v", e.Index, e.Err)
}
func (e *Sequenced) Unwrap() error { return e.Err }

// Prove waits until a served checkpoint covers entry index, checks that
// the log holds leaf there, and returns an inclusion proof against that
// checkpoint, verified with the log's key. With a Cosigner, the checkpoint
// is a co-signed one, waited for at most CosignWait (then the error wraps
// ErrNotCosigned).
func (l *Log) Prove(ctx context.Context, index uint64, leaf []byte) (*Proved, error) {
	if l.isClosing() {
		return nil, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
	signed, err := l.await(ctx, index)
	if err != nil {
		return nil, err
	}
	var lastErr error
	// A proof is built from tiles of the checkpoint's size; if the log grew
	// meanwhile and a partial tile was collected, a newer checkpoint works.
	for range 3 {
		cp, err := tlog.OpenCheckpoint(signed, l.verifier)
		if err != nil {
			return nil, fmt.Errorf("%w: published checkpoint: %v", ErrIntegrity, err)
		}
		if cp.Size <= index {
			return nil, fmt.Errorf("%w: checkpoint of size %d does not cover entry %d", ErrIntegrity, cp.Size, index)
		}
		proof, err := l.inclusionProof(ctx, index, cp.Size)
		if err == nil {
			if err := tlog.VerifyInclusion(leaf, index, proof, cp); err != nil {
				return nil, fmt.Errorf("%w: entry %d: %v", ErrIntegrity, index, err)
			}
			return &Proved{Index: index, Proof: proof, Checkpoint: signed}, nil
		}
		lastErr = err
		l.logger.DebugContext(ctx, "inclusion proof failed, retrying with the latest checkpoint", slog.Uint64("index", index), slog.Any("error", err))
		if signed, err = l.latest(ctx); err != nil {
			break
		}
	}
	return nil, fmt.Errorf("%w: inclusion proof for entry %d: %v", ErrUnavailable, index, lastErr)
}

func (l *Log) inclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	return newProofBuilder(size, l.reader.ReadTile).inclusion(ctx, index)
}

// ConsistencyProof returns an RFC 6962 proof that the tree of size newer
// extends the tree of size older. newer must not exceed the latest
// checkpoint's size.
func (l *Log) ConsistencyProof(ctx context.Context, older, newer uint64) ([][]byte, error) {
	p, err := newProofBuilder(newer, l.reader.ReadTile).consistency(ctx, older, newer)
	if err != nil {
		return nil, fmt.Errorf("%w: consistency proof %d → %d: %v", ErrUnavailable, older, newer, err)
	}
	return p, nil
}

// await waits for a served checkpoint that covers entry index.
func (l *Log) await(ctx context.Context, index uint64) ([]byte, error) {
	signed, _, err := l.awaitServed(ctx, index+1)
	return signed, err
}

// latest returns the latest served checkpoint.
func (l *Log) latest(ctx context.Context) ([]byte, error) {
	signed, _, err := l.awaitServed(ctx, 0)
	return signed, err
}

// Checkpoint returns the latest served checkpoint, signed and parsed: with
// a Cosigner, the latest co-signed one (waiting at most CosignWait for the
// first); else one of the integrated tree, signed now if it grew.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, *tlog.Checkpoint, error) {
	if l.cosigner == nil {
		// The integrated tree as it is now, as the loop serves it.
		signed, cp, err := l.integrated(ctx)
		if err != nil {
			return nil, nil, err
		}
		l.setCosigned(signed, cp)
		return signed, cp, nil
	}
	return l.awaitServed(ctx, 0)
}

// published returns the latest checkpoint Tessera published, verified with
// the log's key.
func (l *Log) published(ctx context.Context) ([]byte, *tlog.Checkpoint, error) {
	signed, err := l.reader.ReadCheckpoint(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: read checkpoint: %v", ErrUnavailable, err)
	}
	cp, err := tlog.OpenCheckpoint(signed, l.verifier)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: published checkpoint: %v", ErrIntegrity, err)
	}
	return signed, cp, nil
}

// Find looks for leaf among the entries [from, Size()) and returns its index.
// It is how a caller that crashed between appending and recording the index
// learns whether the append happened.
func (l *Log) Find(ctx context.Context, leaf []byte, from uint64) (uint64, bool, error) {
	size, err := l.Size(ctx)
	if err != nil {
		return 0, false, err
	}
	const width = 256 // tlog-tiles entry bundle width
	for bundle := from / width; bundle*width < size; bundle++ {
		b, err := client.GetEntryBundle(ctx, l.reader.ReadEntryBundle, bundle, size)
		if err != nil {
			return 0, false, fmt.Errorf("%w: read entry bundle %d: %v", ErrUnavailable, bundle, err)
		}
		for i, e := range b.Entries {
			idx := bundle*width + uint64(i)
			if idx >= from && idx < size && bytes.Equal(e, leaf) {
				return idx, true, nil
			}
		}
	}
	return 0, false, nil
}

// Close stops accepting entries, waits (up to ctx) until everything added is
// covered by a published checkpoint, then stops Tessera's background work.
func (l *Log) Close(ctx context.Context) error {
	var err error
	l.closeOnce.Do(func() {
		err = l.shutdown(ctx)
		close(l.closing)
		l.cancel()
		<-l.loopDone
		if err != nil {
			err = fmt.Errorf("shut down log: %w", err)
		}
	})
	return err
}

func (l *Log) isClosing() bool {
	select {
	case <-l.closing:
		return true
	default:
		return false
	}
}

// Leaf is a sequenced entry to prove: its index and bytes.
type Leaf struct {
	Index uint64
	Bytes []byte
}

// ProveAll waits until a served checkpoint covers every entry of leaves,
// then proves each against that one checkpoint, sharing the tiles read, and
// verifies each proof with the log's key. It returns one result per leaf, in
// order: a proof, or why that leaf could not be proved (ErrIntegrity if the
// log holds other bytes at its index). The error is for the whole batch:
// no checkpoint in time (wrapping ErrNotCosigned with a Cosigner), or the
// log closing.
func (l *Log) ProveAll(ctx context.Context, leaves []Leaf) ([]*Proved, []error, error) {
	if len(leaves) == 0 {
		return nil, nil, nil
	}
	if l.isClosing() {
		return nil, nil, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
	var top uint64
	for _, lf := range leaves {
		top = max(top, lf.Index)
	}
	signed, err := l.await(ctx, top)
	if err != nil {
		return nil, nil, err
	}
	proved := make([]*Proved, len(leaves))
	errs := make([]error, len(leaves))
	todo := leaves
	idx := make([]int, len(leaves))
	for i := range idx {
		idx[i] = i
	}
	// As in Prove: a proof builder that read a tile of another size than
	// its checkpoint's fails; a newer checkpoint then works.
	for attempt := 0; len(idx) > 0; attempt++ {
		cp, err := tlog.OpenCheckpoint(signed, l.verifier)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: published checkpoint: %v", ErrIntegrity, err)
		}
		if cp.Size <= top {
			return nil, nil, fmt.Errorf("%w: checkpoint of size %d does not cover entry %d", ErrIntegrity, cp.Size, top)
		}
		pb := newProofBuilder(cp.Size, l.reader.ReadTile)
		var retry []int
		for _, i := range idx {
			lf := todo[i]
			proof, err := pb.inclusion(ctx, lf.Index)
			if err != nil {
				errs[i] = fmt.Errorf("%w: inclusion proof for entry %d: %v", ErrUnavailable, lf.Index, err)
				retry = append(retry, i)
				continue
			}
			if err := tlog.VerifyInclusion(lf.Bytes, lf.Index, proof, cp); err != nil {
				errs[i] = fmt.Errorf("%w: entry %d: %v", ErrIntegrity, lf.Index, err)
				continue
			}
			proved[i], errs[i] = &Proved{Index: lf.Index, Proof: proof, Checkpoint: signed}, nil
		}
		if idx = retry; len(idx) == 0 || attempt == 2 {
			break
		}
		if signed, err = l.latest(ctx); err != nil {
			break
		}
	}
	return proved, errs, nil
}
