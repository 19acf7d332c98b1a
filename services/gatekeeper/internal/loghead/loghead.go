// Package loghead keeps the gatekeeper's view of the log's head: the
// catalog's latest co-signed checkpoint, each proved consistent with the one
// held before it, against which every admission checks freshness
// (ATTACKS.md #14) and the artifact's own entry checkpoint.
package loghead

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custody-dev/custody/libs/daemon"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/verify"
)

// Source is where the head comes from: the catalog (remote.Catalog).
type Source interface {
	// LogCheckpoint returns the latest co-signed checkpoint, a signed note,
	// unverified.
	LogCheckpoint(ctx context.Context) ([]byte, error)
	// LogConsistency returns an RFC 6962 consistency proof from the tree
	// of size first to the tree of size second, unverified.
	LogConsistency(ctx context.Context, first, second uint64) ([][]byte, error)
}

// ErrFork means two checkpoints of the log that verify with its keys are
// not consistent: the log forked, or the catalog shows this gatekeeper a
// different view than others. The Tracker stays in this state until the
// gatekeeper restarts: every admission is denied.
var ErrFork = errors.New("log fork")

// Defaults of Config.
const (
	DefaultMaxAge  = 5 * time.Minute
	DefaultRefresh = 5 * time.Second
	// demandGap is the least time between two fetches asked for by
	// admissions (no head, a stale head, an entry beyond the head): the
	// catalog sees at most one a second whatever the admission rate.
	demandGap = time.Second
	// maxProven bounds the proven (size, root) pairs remembered; past it
	// the set is cleared and sizes are proved again.
	maxProven = 1 << 16
)

// Config configures New.
type Config struct {
	Source Source
	// Root returns the trust root whose log keys open checkpoints (the
	// verifier's, verify.OpenCheckpoint).
	Root func() (*trustroot.Root, error)
	// MaxAge is the oldest cosignature an admission accepts on the head
	// (tlog.CheckFresh); zero checks none (an explicit choice the caller
	// logs). Negative is refused.
	MaxAge time.Duration
	// Refresh is how often Run fetches the head. Zero means
	// DefaultRefresh.
	Refresh time.Duration
	// Timeout bounds one fetch (checkpoint and proof). Zero means 5s.
	Timeout time.Duration
	// Registerer receives custody_log_checkpoint_age_seconds; nil: not
	// exported.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
	// File, if set, keeps the head across restarts: each new head is
	// written to it (atomically, synced) before it is held, and the first
	// fetch after a start proves the catalog's checkpoint consistent with
	// the one saved there instead of taking it as served. So a fork, or a
	// catalog rolled back to an older view, is caught across a restart
	// too. A saved head that does not verify with the trust root, or a
	// write that fails, fails the fetch: the head held then ages and
	// admissions are denied past MaxAge.
	File string
}

// head is a checkpoint held, opened and proved.
type head struct {
	signed []byte
	cp     *tlog.Checkpoint
}

// Tracker holds the log head. Check is safe for concurrent use and, while
// the head is fresh and the entry's size already proved, takes no lock
// beyond a read lock and makes no call; fetches are serialized.
type Tracker struct {
	cfg     Config
	started time.Time

	head atomic.Pointer[head]
	// fork, once set, is the reason every Check denies.
	fork atomic.Pointer[string]

	fetchMu sync.Mutex // serializes fetches
	// fetches counts fetches started; lastErr is the last one's result.
	fetches atomic.Uint64
	lastErr atomic.Pointer[error]
	// mono is a monotonic time at New; lastDone is when the last fetch
	// ended, in nanoseconds since mono (wall-clock steps do not move it).
	mono     time.Time
	lastDone atomic.Int64

	mu sync.RWMutex
	// proven maps tree sizes to the root hash proved consistent with the
	// heads held (consistency composes: a size proved against one head is
	// a prefix of every later head proved to extend it).
	proven map[uint64]string
}

// New returns a Tracker that has no head yet: Run fetches it, and so does
// the first Check.
func New(cfg Config) (*Tracker, error) {
	if cfg.Source == nil || cfg.Root == nil {
		return nil, errors.New("log head: a source and a trust root are required")
	}
	if cfg.MaxAge < 0 {
		return nil, fmt.Errorf("log head: maximum checkpoint age %s: want zero (off) or positive", cfg.MaxAge)
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.Refresh < 0 {
		return nil, fmt.Errorf("log head: refresh %s: want positive", cfg.Refresh)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Tracker{cfg: cfg, started: cfg.Now(), mono: time.Now(), proven: map[uint64]string{}}
	if cfg.Registerer != nil {
		age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "custody_log_checkpoint_age_seconds",
			Help: "Age of the cosignature of the log checkpoint the gatekeeper holds as the log's head (since start while it holds none); admissions are denied past --max-checkpoint-age.",
		}, t.Age)
		if err := cfg.Registerer.Register(age); err != nil {
			return nil, fmt.Errorf("register log head metrics: %w", err)
		}
	}
	return t, nil
}

// MaxAge returns the maximum age admissions accept; zero: not checked.
func (t *Tracker) MaxAge() time.Duration { return t.cfg.MaxAge }

// Age returns how old the head's cosignature is, in seconds; with no head,
// how long the tracker has run without one.
func (t *Tracker) Age() float64 {
	now := t.cfg.Now()
	if h := t.head.Load(); h != nil && !h.cp.CosignedAt.IsZero() {
		return now.Sub(h.cp.CosignedAt).Seconds()
	}
	return now.Sub(t.started).Seconds()
}

// Head returns the checkpoint held, nil if none.
func (t *Tracker) Head() *tlog.Checkpoint {
	if h := t.head.Load(); h != nil {
		return h.cp
	}
	return nil
}

// Run fetches the head every Refresh until ctx is done. A failed fetch is
// logged (once until one succeeds) and the head held stays; it ages, and
// Check denies once it is older than MaxAge.
func (t *Tracker) Run(ctx context.Context) error {
	tick := time.NewTicker(t.cfg.Refresh)
	defer tick.Stop()
	failing := false
	for {
		err := t.Refresh(ctx)
		switch {
		case err != nil && !failing:
			failing = true
			t.cfg.Logger.WarnContext(ctx, "log head not updated: admissions are denied once the checkpoint held is older than the maximum age",
				slog.Duration("max_age", t.cfg.MaxAge), slog.Float64("age_seconds", t.Age()), slog.Any("error", err))
		case err == nil && failing:
			failing = false
			t.cfg.Logger.InfoContext(ctx, "log head updated again", slog.Uint64("size", t.Head().Size), slog.Float64("age_seconds", t.Age()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Refresh fetches the catalog's latest checkpoint, opens it with the trust
// root's key, proves it consistent with the head held and holds it. One
// fetch runs at a time; a caller that waited for another's fetch that
// started after it called returns that one's result.
func (t *Tracker) Refresh(ctx context.Context) error {
	seen := t.fetches.Load()
	t.fetchMu.Lock()
	defer t.fetchMu.Unlock()
	if t.fetches.Load() != seen {
		// One started after this call and ended: its answer is as new.
		return t.lastError()
	}
	t.fetches.Add(1)
	err := t.fetch(ctx)
	t.lastErr.Store(&err)
	t.lastDone.Store(int64(time.Since(t.mono)))
	return err
}

func (t *Tracker) lastError() error {
	if e := t.lastErr.Load(); e != nil {
		return *e
	}
	return nil
}

// demand is a Refresh asked for by an admission: skipped if a fetch ended
// less than demandGap ago.
func (t *Tracker) demand(ctx context.Context) {
	if done := t.lastDone.Load(); done != 0 && time.Since(t.mono)-time.Duration(done) < demandGap {
		return
	}
	_ = t.Refresh(ctx)
}

func (t *Tracker) fetch(ctx context.Context) error {
	if f := t.fork.Load(); f != nil {
		return fmt.Errorf("%w: %s", ErrFork, *f)
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	signed, err := t.cfg.Source.LogCheckpoint(ctx)
	if err != nil {
		return err
	}
	root, err := t.cfg.Root()
	if err != nil {
		return fmt.Errorf("no trust root to open the log's checkpoint with: %w", err)
	}
	cp, err := verify.OpenCheckpoint(signed, root)
	if err != nil {
		return fmt.Errorf("the catalog's latest checkpoint does not verify: %w", err)
	}
	prev := t.head.Load()
	if prev == nil && t.cfg.File != "" {
		if prev, err = t.load(root); err != nil {
			return err
		}
		if prev != nil {
			t.hold(prev, nil)
			t.cfg.Logger.InfoContext(ctx, "log head from the last run", slog.String("file", t.cfg.File), slog.String("origin", prev.cp.Origin),
				slog.Uint64("size", prev.cp.Size), slog.Time("cosigned_at", prev.cp.CosignedAt))
		}
	}
	if prev == nil {
		// The first head is taken as served (it verifies with the trust
		// root's key); every later one must extend it.
		if err := t.save(signed); err != nil {
			return err
		}
		t.hold(&head{signed: signed, cp: cp}, nil)
		t.cfg.Logger.InfoContext(ctx, "log head", slog.String("origin", cp.Origin), slog.Uint64("size", cp.Size),
			slog.Time("cosigned_at", cp.CosignedAt))
		return nil
	}
	older, newer := prev.cp, cp
	if cp.Size < prev.cp.Size {
		older, newer = cp, prev.cp
	}
	if err := t.prove(ctx, older, newer); err != nil {
		return err
	}
	if cp.Size < prev.cp.Size || (cp.Size == prev.cp.Size && !cp.CosignedAt.After(prev.cp.CosignedAt)) {
		// Behind or no fresher (a lagging replica): keep the head held;
		// it ages.
		return nil
	}
	if err := t.save(signed); err != nil {
		return err
	}
	t.hold(&head{signed: signed, cp: cp}, prev.cp)
	return nil
}

// maxHeadFile bounds the saved head read back: a checkpoint note with its
// signatures is a few hundred bytes.
const maxHeadFile = 64 << 10

// load reads the head saved by an earlier run; nil if there is none.
func (t *Tracker) load(root *trustroot.Root) (*head, error) {
	f, err := os.Open(t.cfg.File)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the saved log head: %w", err)
	}
	defer f.Close()
	signed, err := io.ReadAll(io.LimitReader(f, maxHeadFile+1))
	if err != nil {
		return nil, fmt.Errorf("read the saved log head %s: %w", t.cfg.File, err)
	}
	if len(signed) > maxHeadFile {
		return nil, fmt.Errorf("the saved log head %s is over %d bytes: not a checkpoint; check the file (after restoring a catalog from a backup, remove it)", t.cfg.File, maxHeadFile)
	}
	cp, err := verify.OpenCheckpoint(signed, root)
	if err != nil {
		return nil, fmt.Errorf("the saved log head %s does not verify with the trust root (%w): admissions stay denied until it is checked; if the log's key was rotated or the catalog restored from a backup, remove the file", t.cfg.File, err)
	}
	return &head{signed: signed, cp: cp}, nil
}

// save writes signed as the head to keep, when a file is configured.
func (t *Tracker) save(signed []byte) error {
	if t.cfg.File == "" {
		return nil
	}
	if err := daemon.WriteFileAtomic(t.cfg.File, signed, 0o600); err != nil {
		return fmt.Errorf("save the log head: %w", err)
	}
	return nil
}

// prove checks that newer extends older (same origin, consistency proof
// from the catalog); a proof that does not match is a fork, held.
func (t *Tracker) prove(ctx context.Context, older, newer *tlog.Checkpoint) error {
	if older.Origin != newer.Origin {
		return t.forked(older, newer, fmt.Errorf("another log's checkpoint"))
	}
	var proof [][]byte
	if older.Size != newer.Size && older.Size != 0 {
		var err error
		if proof, err = t.cfg.Source.LogConsistency(ctx, older.Size, newer.Size); err != nil {
			return err
		}
	}
	if err := tlog.VerifyConsistency(older, newer, proof); err != nil {
		if errors.Is(err, tlog.ErrProofMismatch) {
			return t.forked(older, newer, err)
		}
		return fmt.Errorf("consistency of the log's checkpoints at sizes %d and %d: %w", older.Size, newer.Size, err)
	}
	return nil
}

// hold makes h the head, and records both its size and prev's as proven.
func (t *Tracker) hold(h *head, prev *tlog.Checkpoint) {
	t.mu.Lock()
	if len(t.proven) >= maxProven {
		clear(t.proven)
	}
	t.proven[h.cp.Size] = string(h.cp.Hash)
	if prev != nil {
		t.proven[prev.Size] = string(prev.Hash)
	}
	t.mu.Unlock()
	t.head.Store(h)
}

func (t *Tracker) forked(a, b *tlog.Checkpoint, err error) error {
	msg := fmt.Sprintf("the log's checkpoints %s and %s both verify with the trust root's key but are not consistent (%v): the log forked or the catalog shows this gatekeeper a different view; every admission is denied until this is investigated (docs/runbooks/log-checkpoint-stale.md) and the gatekeeper restarted",
		describe(a), describe(b), err)
	t.fork.CompareAndSwap(nil, &msg)
	t.cfg.Logger.Error("log fork detected", slog.String("first", describe(a)), slog.String("second", describe(b)), slog.Any("error", err))
	return fmt.Errorf("%w: %s", ErrFork, msg)
}

func describe(cp *tlog.Checkpoint) string {
	s := fmt.Sprintf("of %s at size %d (root %s", cp.Origin, cp.Size, hex.EncodeToString(cp.Hash))
	if !cp.CosignedAt.IsZero() {
		s += ", co-signed " + cp.CosignedAt.UTC().Format(time.RFC3339)
	}
	return s + ")"
}

// Check judges an admission against the head: it returns why the
// admission must be denied ("" if not) and, if not, what it confirmed.
// entry is the artifact's entry checkpoint as the verifier opened it; nil
// if it did not verify (the verifier denies already) and then only the
// head's freshness is checked. A head missing or older than MaxAge is
// fetched again (at most once a second for all admissions) before it
// denies; an entry beyond the head has it fetched again at once (one fetch
// for all admissions waiting). An error means the catalog could not prove the entry's
// checkpoint consistent with the head: no decision can be made.
func (t *Tracker) Check(ctx context.Context, entry *tlog.Checkpoint) (denial, confirmed string, err error) {
	if f := t.fork.Load(); f != nil {
		return *f, "", nil
	}
	h := t.head.Load()
	switch {
	case h != nil && entry != nil && entry.Size > h.cp.Size:
		// Logged after the head was fetched (a new artifact): fetch it
		// again, once for every admission waiting, whatever the gap.
		_ = t.Refresh(ctx)
	case h == nil || t.stale(h) != nil:
		t.demand(ctx)
	}
	if f := t.fork.Load(); f != nil {
		return *f, "", nil
	}
	h = t.head.Load()
	if h == nil {
		why := t.lastError()
		return fmt.Sprintf("the log checkpoint is stale: the gatekeeper holds no checkpoint of the log from the catalog (%v), so it cannot tell that the log is not frozen; check that the catalog and the signer are up", why), "", nil
	}
	if err := t.stale(h); err != nil {
		return fmt.Sprintf("the log checkpoint is stale: %v (gatekeeper --max-checkpoint-age %s)", err, t.cfg.MaxAge), "", nil
	}
	if entry == nil {
		return "", "", nil
	}
	switch {
	case entry.Origin != h.cp.Origin:
		return fmt.Sprintf("the artifact's log entry is in log %s, but the gatekeeper follows log %s", entry.Origin, h.cp.Origin), "", nil
	case entry.Size > h.cp.Size:
		return fmt.Sprintf("the artifact's entry checkpoint %s is ahead of the newest checkpoint the catalog serves %s: the catalog is inconsistent; retry, and check the catalog", describe(entry), describe(h.cp)), "", nil
	}
	t.mu.RLock()
	root, ok := t.proven[entry.Size]
	t.mu.RUnlock()
	switch {
	case ok && root == string(entry.Hash):
	case ok:
		known := &tlog.Checkpoint{Origin: entry.Origin, Size: entry.Size, Hash: []byte(root)}
		return t.forked(known, entry, errors.New("two roots at the same size")).Error(), "", nil
	default:
		if err := t.prove(ctx, entry, h.cp); err != nil {
			if errors.Is(err, ErrFork) {
				return err.Error(), "", nil
			}
			return "", "", err
		}
		t.mu.Lock()
		if len(t.proven) >= maxProven {
			clear(t.proven)
		}
		t.proven[entry.Size] = string(entry.Hash)
		t.mu.Unlock()
	}
	return "", fmt.Sprintf("entry checkpoint at size %d is consistent with the log head at size %d", entry.Size, h.cp.Size), nil
}

// stale is tlog.CheckFresh of h now, nil with MaxAge zero.
func (t *Tracker) stale(h *head) error {
	return tlog.CheckFresh(h.cp, t.cfg.Now(), t.cfg.MaxAge)
}
