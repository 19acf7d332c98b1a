package loghead_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
	"github.com/custody-dev/custody/services/gatekeeper/internal/loghead"
)

const (
	origin      = "custody.test/log"
	witnessName = "custody.test/signer"
)

// catalog is a hand-written Source: a real RFC 6962 tree whose
// checkpoints are signed with the log's key and co-signed (timestamped
// now) with the witness key, as the catalog serves them.
type catalog struct {
	t       *testing.T
	logKey  string
	witness string

	mu sync.Mutex
	// tree is what checkpoints and proofs are made from.
	tree *testonly.Tree
	// frozen, if set, is served instead of a new checkpoint.
	frozen      []byte
	down        bool
	checkpoints int
	proofs      int
}

func newCatalog(t *testing.T, logKey, witness string, entries int) *catalog {
	c := &catalog{t: t, logKey: logKey, witness: witness, tree: testonly.New(rfc6962.DefaultHasher)}
	c.grow(entries)
	return c
}

func (c *catalog) grow(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for range n {
		c.tree.AppendData(fmt.Appendf(nil, "entry %d", c.tree.Size()))
	}
}

// checkpoint is the tree's checkpoint at size, as the verifier opens an
// entry's.
func (c *catalog) checkpoint(size uint64) *tlog.Checkpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &tlog.Checkpoint{Origin: origin, Size: size, Hash: c.tree.HashAt(size)}
}

func (c *catalog) note(size uint64) []byte {
	c.t.Helper()
	signed, err := tlog.SignCheckpoint(tlog.Checkpoint{Origin: origin, Size: size, Hash: c.tree.HashAt(size)}, c.logKey)
	if err != nil {
		c.t.Fatal(err)
	}
	out, err := tlog.CosignCheckpoint(signed, c.witness)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// freeze keeps serving the current checkpoint, as a frozen log does.
func (c *catalog) freeze() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frozen = c.note(c.tree.Size())
}

func (c *catalog) thaw() {
	c.mu.Lock()
	c.frozen = nil
	c.mu.Unlock()
}

func (c *catalog) setDown(down bool) {
	c.mu.Lock()
	c.down = down
	c.mu.Unlock()
}

func (c *catalog) stats() (checkpoints, proofs int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checkpoints, c.proofs
}

var errDown = errors.New("catalog down (test)")

func (c *catalog) LogCheckpoint(context.Context) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checkpoints++
	if c.down {
		return nil, errDown
	}
	if c.frozen != nil {
		return c.frozen, nil
	}
	return c.note(c.tree.Size()), nil
}

func (c *catalog) LogConsistency(_ context.Context, first, second uint64) ([][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.proofs++
	if c.down {
		return nil, errDown
	}
	return c.tree.ConsistencyProof(first, second)
}

var _ loghead.Source = (*catalog)(nil)

// clock is the tracker's clock: real time plus an offset.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

type fixture struct {
	cat   *catalog
	fork  *catalog // shares the first forkAt entries, then differs
	clock *clock
	reg   *prometheus.Registry
	tr    *loghead.Tracker
	root  *trustroot.Root
	// file is where the tracker keeps its head (Config.File).
	file string
	age  time.Duration
}

const (
	maxAge = 5 * time.Minute
	forkAt = 4
)

func newFixture(t *testing.T, entries int, age time.Duration) *fixture {
	t.Helper()
	logKey, _, err := tlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	witness, witnessV, err := tlog.GenerateCosignerKey(witnessName)
	if err != nil {
		t.Fatal(err)
	}
	root := trustroottest.New(t, 1).Root(1, 1, time.Now(), nil, []trustroot.LogKey{{Origin: origin, VerifierKey: witnessV}})
	f := &fixture{cat: newCatalog(t, logKey, witness, entries), fork: newCatalog(t, logKey, witness, forkAt), clock: &clock{}, reg: prometheus.NewRegistry(),
		root: root, file: filepath.Join(t.TempDir(), "log-head.note"), age: age}
	for i := forkAt; i < entries+4; i++ {
		f.fork.tree.AppendData(fmt.Appendf(nil, "evil %d", i))
	}
	f.tr = f.start(t, f.cat, f.reg)
	return f
}

// start returns a tracker over src keeping its head in f.file, as a
// gatekeeper process does at start-up.
func (f *fixture) start(t *testing.T, src loghead.Source, reg prometheus.Registerer) *loghead.Tracker {
	t.Helper()
	tr, err := loghead.New(loghead.Config{Source: src, Root: func() (*trustroot.Root, error) { return f.root, nil },
		MaxAge: f.age, Refresh: time.Hour, Registerer: reg, Now: f.clock.now, File: f.file})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func (f *fixture) check(t *testing.T, entry *tlog.Checkpoint) (denial, confirmed string) {
	t.Helper()
	denial, confirmed, err := f.tr.Check(t.Context(), entry)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return denial, confirmed
}

func (f *fixture) mustAllow(t *testing.T, entry *tlog.Checkpoint) {
	t.Helper()
	if denial, confirmed := f.check(t, entry); denial != "" || (entry != nil && confirmed == "") {
		t.Fatalf("Check(%+v) = deny %q; want allowed with a confirmation", entry, denial)
	}
}

func (f *fixture) mustDeny(t *testing.T, entry *tlog.Checkpoint, want ...string) string {
	t.Helper()
	denial, _ := f.check(t, entry)
	if denial == "" {
		t.Fatalf("Check(%+v) allowed; want a denial mentioning %q", entry, want)
	}
	for _, w := range want {
		if !strings.Contains(denial, w) {
			t.Errorf("denial %q lacks %q", denial, w)
		}
	}
	return denial
}

// TestFreshHeadAllowsAndProvedSizesAreCached: a fresh head allows, an
// entry's size is proved once, and stays proved as the head moves forward
// (consistency composes); a new size is proved once more.
func TestFreshHeadAllowsAndProvedSizesAreCached(t *testing.T) {
	f := newFixture(t, 10, maxAge)
	f.mustAllow(t, f.cat.checkpoint(3))
	if _, proofs := f.cat.stats(); proofs != 1 {
		t.Errorf("first entry: %d proofs asked, want 1", proofs)
	}
	for range 5 {
		f.mustAllow(t, f.cat.checkpoint(3))
	}
	f.mustAllow(t, f.cat.checkpoint(10)) // the head's own size
	if _, proofs := f.cat.stats(); proofs != 1 {
		t.Errorf("same entry again and the head's size: %d proofs asked, want still 1", proofs)
	}
	f.cat.grow(7)
	if err := f.tr.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := f.tr.Head().Size; got != 17 {
		t.Fatalf("head size %d after the log grew, want 17", got)
	}
	_, before := f.cat.stats() // the head's own proof 10 → 17
	f.mustAllow(t, f.cat.checkpoint(3))
	f.mustAllow(t, f.cat.checkpoint(10))
	if _, proofs := f.cat.stats(); proofs != before {
		t.Errorf("sizes proved against the older head were proved again: %d proofs, want %d", proofs, before)
	}
	f.mustAllow(t, f.cat.checkpoint(12))
	if _, proofs := f.cat.stats(); proofs != before+1 {
		t.Errorf("a new size: %d proofs, want %d", proofs, before+1)
	}
	// No entry (its checkpoint failed verification): only freshness.
	f.mustAllow(t, nil)
}

// TestStaleHeadDenies: a log that stops being co-signed (the catalog
// serves the same checkpoint) is denied once it is older than the maximum
// age, with a reason that says so, its age and the maximum; the catalog
// is asked again at most once a second while it is; a fresh checkpoint
// allows again.
func TestStaleHeadDenies(t *testing.T) {
	f := newFixture(t, 6, maxAge)
	f.mustAllow(t, f.cat.checkpoint(6))
	f.cat.freeze()
	f.clock.advance(maxAge - time.Minute)
	f.mustAllow(t, f.cat.checkpoint(6))
	f.clock.advance(2 * time.Minute)
	before, _ := f.cat.stats()
	for range 50 {
		f.mustDeny(t, f.cat.checkpoint(6), "the log checkpoint is stale", "more than the maximum age 5m0s", "--max-checkpoint-age 5m0s", "check that the catalog and the signer are up")
	}
	if after, _ := f.cat.stats(); after-before > 2 {
		t.Errorf("50 admissions on a stale head asked the catalog %d times; want at most 2 (one a second)", after-before)
	}
	f.cat.thaw()
	f.clock.advance(-(maxAge + time.Minute)) // the signer co-signs again, now
	time.Sleep(1100 * time.Millisecond)      // past the on-demand gap
	f.mustAllow(t, f.cat.checkpoint(6))
}

// TestCatalogDownDenies: with no head (the catalog never answered) every
// admission is denied, saying why; a head held while the catalog is down
// allows until it is too old.
func TestCatalogDownDenies(t *testing.T) {
	f := newFixture(t, 5, maxAge)
	f.cat.setDown(true)
	f.mustDeny(t, f.cat.checkpoint(5), "the log checkpoint is stale", "holds no checkpoint", errDown.Error())
	f.cat.setDown(false)
	time.Sleep(1100 * time.Millisecond)
	f.mustAllow(t, f.cat.checkpoint(5))
	f.cat.setDown(true)
	if err := f.tr.Refresh(t.Context()); !errors.Is(err, errDown) {
		t.Fatalf("Refresh with the catalog down: %v", err)
	}
	f.mustAllow(t, f.cat.checkpoint(5))
	f.clock.advance(maxAge + time.Second)
	f.mustDeny(t, f.cat.checkpoint(5), "the log checkpoint is stale")
	// A new size cannot be proved with the catalog down: no decision.
	f.clock.advance(-(maxAge + time.Second))
	if _, _, err := f.tr.Check(t.Context(), f.cat.checkpoint(2)); !errors.Is(err, errDown) {
		t.Errorf("an unproved size with the catalog down: got %v, want the catalog's error", err)
	}
}

// TestForkedHeadDenies: a new head that does not extend the one held is a
// fork named with both checkpoints; every admission is denied from then
// on, also after the catalog serves the good tree again.
func TestForkedHeadDenies(t *testing.T) {
	f := newFixture(t, 6, maxAge)
	f.mustAllow(t, f.cat.checkpoint(6))
	good := f.tr.Head()
	evil := f.fork.checkpoint(10)
	f.cat.mu.Lock()
	f.cat.tree, f.cat.frozen = f.fork.tree, nil // the catalog now serves another tree
	f.cat.mu.Unlock()
	err := f.tr.Refresh(t.Context())
	if !errors.Is(err, loghead.ErrFork) {
		t.Fatalf("Refresh onto a forked tree: %v, want ErrFork", err)
	}
	want := []string{"at size 6 (root " + hex.EncodeToString(good.Hash), "at size 10 (root " + hex.EncodeToString(evil.Hash), "not consistent"}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("fork error %q lacks %q", err, w)
		}
	}
	f.mustDeny(t, f.cat.checkpoint(3), want...)
	if got := f.tr.Head(); got.Size != 6 {
		t.Errorf("after a fork the head is %d, want the one held (6)", got.Size)
	}
	f.mustDeny(t, nil, "log forked")
}

// TestForkedEntryDenies: an entry checkpoint of another tree, at a size
// not proved yet or at a proved size with another root, is denied naming
// it and the head's side.
func TestForkedEntryDenies(t *testing.T) {
	f := newFixture(t, 10, maxAge)
	f.mustAllow(t, f.cat.checkpoint(10))
	// Another root at a size not proved yet: the catalog's proof from it to
	// the head does not match.
	evil := f.fork.checkpoint(7)
	f.mustDeny(t, evil, "at size 7 (root "+hex.EncodeToString(evil.Hash), "at size 10 (root", "not consistent")

	g := newFixture(t, 10, maxAge)
	g.mustAllow(t, g.cat.checkpoint(6))
	evil = g.fork.checkpoint(6)
	g.mustDeny(t, evil, "at size 6 (root "+hex.EncodeToString(evil.Hash), "at size 6 (root "+hex.EncodeToString(g.cat.checkpoint(6).Hash), "two roots at the same size")
}

// TestEntryAheadOfHeadRefreshes: an entry logged after the head was
// fetched has the head fetched again; one the catalog's head never covers
// is denied.
func TestEntryAheadOfHeadRefreshes(t *testing.T) {
	f := newFixture(t, 4, maxAge)
	f.mustAllow(t, f.cat.checkpoint(4))
	f.cat.grow(3)
	// At once, not after the on-demand gap: a just-published artifact is
	// admitted.
	f.mustAllow(t, f.cat.checkpoint(7))
	if got := f.tr.Head().Size; got != 7 {
		t.Errorf("head %d, want 7", got)
	}
	f.mustDeny(t, &tlog.Checkpoint{Origin: origin, Size: 9, Hash: make([]byte, 32)}, "is ahead of the newest checkpoint the catalog serves")
	f.mustDeny(t, &tlog.Checkpoint{Origin: "other.test/log", Size: 2, Hash: make([]byte, 32)}, "in log other.test/log")
}

// TestMaxAgeZeroChecksNoAge: with the check off an old head allows; a fork
// still denies.
func TestMaxAgeZeroChecksNoAge(t *testing.T) {
	f := newFixture(t, 5, 0)
	f.mustAllow(t, f.cat.checkpoint(5))
	f.cat.freeze()
	f.clock.advance(48 * time.Hour)
	f.mustAllow(t, f.cat.checkpoint(5))
	f.mustDeny(t, f.fork.checkpoint(5), "two roots at the same size")
}

// TestAgeMetric: custody_log_checkpoint_age_seconds is the head's
// cosignature age, and the time since start while there is none.
func TestAgeMetric(t *testing.T) {
	f := newFixture(t, 5, maxAge)
	f.clock.advance(90 * time.Second)
	if got := gauge(t, f.reg); got < 89 || got > 95 {
		t.Errorf("no head yet, 90s after start: age %v", got)
	}
	if err := f.tr.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Co-signed now (real time), seen 90s ahead.
	if got := gauge(t, f.reg); got < 88 || got > 95 {
		t.Errorf("head co-signed 90s before the tracker's now: age %v", got)
	}
	f.clock.advance(-90 * time.Second)
	if got := gauge(t, f.reg); got > 3 {
		t.Errorf("fresh head: age %v", got)
	}
}

func gauge(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "custody_log_checkpoint_age_seconds" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("custody_log_checkpoint_age_seconds is not exported")
	return 0
}

// TestConcurrentChecks: many admissions at once on a fresh head, each with
// its own entry size, all allowed, each size proved at most once.
func TestConcurrentChecks(t *testing.T) {
	f := newFixture(t, 64, maxAge)
	f.mustAllow(t, nil)
	var wg sync.WaitGroup
	errs := make(chan string, 64*4)
	for i := range 64 * 4 {
		wg.Go(func() {
			size := uint64(i%64 + 1)
			if denial, _, err := f.tr.Check(context.Background(), f.cat.checkpoint(size)); err != nil || denial != "" {
				errs <- fmt.Sprintf("size %d: %q %v", size, denial, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestClockStepBackKeepsFetching: a wall clock stepped back (NTP) neither
// stops fetches nor makes one return an earlier fetch's answer.
func TestClockStepBackKeepsFetching(t *testing.T) {
	f := newFixture(t, 3, 0)
	if err := f.tr.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.clock.advance(-time.Hour)
	f.cat.grow(2)
	if err := f.tr.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := f.tr.Head().Size; got != 5 {
		t.Errorf("head %d after the clock stepped back and the log grew, want 5", got)
	}
}

// TestHeadSurvivesRestart: the head is kept in Config.File, so a
// gatekeeper restarted in front of a catalog that now serves another tree
// (a fork, or a view withheld from this gatekeeper) reports the fork
// instead of taking the new tree's checkpoint as its first head; in front
// of the same log grown, it carries on from the saved head.
func TestHeadSurvivesRestart(t *testing.T) {
	f := newFixture(t, 6, maxAge)
	f.mustAllow(t, f.cat.checkpoint(6))
	saved, err := os.ReadFile(f.file)
	if err != nil {
		t.Fatalf("no head saved: %v", err)
	}
	if !strings.Contains(string(saved), "\n6\n") {
		t.Errorf("saved head %q is not the checkpoint of size 6", saved)
	}

	forked := f.start(t, f.fork, nil) // the restarted gatekeeper
	if err := forked.Refresh(t.Context()); !errors.Is(err, loghead.ErrFork) {
		t.Fatalf("restart in front of a forked tree: %v, want ErrFork", err)
	}
	denial, _, err := forked.Check(t.Context(), f.fork.checkpoint(5))
	if err != nil || !strings.Contains(denial, "not consistent") {
		t.Fatalf("after a restart onto a fork: denial %q, %v; want a fork named", denial, err)
	}
	if got, _ := os.ReadFile(f.file); string(got) != string(saved) {
		t.Error("the forked tree's checkpoint replaced the saved head")
	}

	f.cat.grow(4)
	again := f.start(t, f.cat, nil)
	if denial, _, err := again.Check(t.Context(), f.cat.checkpoint(8)); err != nil || denial != "" {
		t.Fatalf("restart in front of the same log grown: denial %q, %v", denial, err)
	}
	if got := again.Head().Size; got != 10 {
		t.Errorf("head %d after the restart, want 10", got)
	}
	if _, proofs := f.cat.stats(); proofs < 2 {
		t.Errorf("%d consistency proofs asked: the restarted tracker did not prove 6 → 10", proofs)
	}
}

// TestSavedHeadRefused: a saved head that is not a checkpoint of the
// trusted log (corrupted, another log's, oversized) fails closed with an
// error naming the file and what to do, and is not overwritten by the
// catalog's checkpoint.
func TestSavedHeadRefused(t *testing.T) {
	for name, content := range map[string][]byte{
		"garbage":   []byte("not a checkpoint\n"),
		"oversized": make([]byte, 100<<10),
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, 6, maxAge)
			if err := os.WriteFile(f.file, content, 0o600); err != nil {
				t.Fatal(err)
			}
			err := f.tr.Refresh(t.Context())
			if err == nil || !strings.Contains(err.Error(), f.file) || !strings.Contains(err.Error(), "remove it") && !strings.Contains(err.Error(), "remove the file") {
				t.Fatalf("Refresh with a bad saved head: %v; want an error naming %s and what to do", err, f.file)
			}
			f.mustDeny(t, f.cat.checkpoint(3), "holds no checkpoint")
			if got, _ := os.ReadFile(f.file); string(got) != string(content) {
				t.Error("the bad saved head was overwritten")
			}
		})
	}
}

// TestCatalogBehindSavedHead: a catalog restored to an older view of the
// log (smaller than the saved head) cannot prove the saved head extends
// what it serves: the tracker keeps the saved head, makes no decision for
// entries it cannot prove, and denies once that head is stale.
func TestCatalogBehindSavedHead(t *testing.T) {
	f := newFixture(t, 10, maxAge)
	f.mustAllow(t, f.cat.checkpoint(10))
	older := newCatalog(t, f.cat.logKey, f.cat.witness, 0)
	older.tree = f.cat.tree // the same entries, served at size 6
	older.frozen = older.note(6)
	tr := f.start(t, &behind{catalog: older, size: 6}, nil)
	if err := tr.Refresh(t.Context()); err == nil {
		t.Fatal("a catalog behind the saved head was accepted")
	}
	if got := tr.Head().Size; got != 10 {
		t.Fatalf("head %d, want the saved 10", got)
	}
	if _, _, err := tr.Check(t.Context(), f.cat.checkpoint(5)); err == nil {
		t.Error("an entry the catalog cannot prove against the saved head got a decision")
	}
	f.clock.advance(maxAge + time.Minute)
	denial, _, _ := tr.Check(t.Context(), nil)
	if !strings.Contains(denial, "stale") {
		t.Errorf("saved head past the maximum age: denial %q, want stale", denial)
	}
}

// behind is a catalog that only has the first size entries: it proves
// nothing beyond them.
type behind struct {
	*catalog
	size uint64
}

func (b *behind) LogConsistency(ctx context.Context, first, second uint64) ([][]byte, error) {
	if second > b.size {
		return nil, fmt.Errorf("tree size %d is beyond this log's %d (test)", second, b.size)
	}
	return b.catalog.LogConsistency(ctx, first, second)
}
