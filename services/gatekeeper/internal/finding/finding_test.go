package finding

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
	"github.com/custody-dev/custody/services/gatekeeper/internal/loghead"
)

var (
	td = spiffeid.RequireTrustDomainFromString("custody.test")
	t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
)

const (
	dA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	dC = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	dD = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
)

const (
	logOrigin   = "custody.test/log"
	witnessName = "custody.test/signer"
)

// fakeLog is a log of entries in a real RFC 6962 tree, served as the
// catalog serves them: in pages of page (default 3) so that paging is
// exercised, each with the tree's checkpoint signed with the log's key
// and co-signed (timestamped now) by the witness the trust root lists,
// and real consistency proofs. It is the log head's Source too. fail, if
// set, fails the next read; size, if set, is the size of the tree served
// (a catalog rolled back to it); tamper, if set, rewrites each answer of
// Entries (a lying catalog).
type fakeLog struct {
	mu      sync.Mutex
	leaves  [][]byte
	tree    *testonly.Tree
	page    int
	fail    error
	size    uint64
	tamper  func(start uint64, page [][]byte, checkpoint []byte) ([][]byte, []byte)
	logKey  string
	witness string
	// witnessV is the witness's verifier key, the one the trust root lists.
	witnessV string
	// starts are the starts Entries was asked for.
	starts []uint64
	t      testing.TB
}

func newFakeLog(t testing.TB) *fakeLog {
	logKey, _, err := tlog.GenerateKey(logOrigin)
	if err != nil {
		t.Fatal(err)
	}
	witness, witnessV, err := tlog.GenerateCosignerKey(witnessName)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeLog{tree: testonly.New(rfc6962.DefaultHasher), logKey: logKey, witness: witness, witnessV: witnessV, t: t}
}

// served is the size of the tree served; l.mu is held.
func (l *fakeLog) served() uint64 {
	if l.size != 0 {
		return l.size
	}
	return l.tree.Size()
}

// note is the checkpoint of tree at size, signed with logKey and
// co-signed with witness (either may be another's: a forgery).
func note(t testing.TB, tree *testonly.Tree, size uint64, logKey, witness string) []byte {
	t.Helper()
	signed, err := tlog.SignCheckpoint(tlog.Checkpoint{Origin: logOrigin, Size: size, Hash: tree.HashAt(size)}, logKey)
	if err != nil {
		t.Fatal(err)
	}
	if witness == "" {
		return signed
	}
	out, err := tlog.CosignCheckpoint(signed, witness)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (l *fakeLog) Entries(_ context.Context, start uint64) ([][]byte, []byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.starts = append(l.starts, start)
	if err := l.fail; err != nil {
		l.fail = nil
		return nil, nil, err
	}
	size := l.served()
	signed := note(l.t, l.tree, size, l.logKey, l.witness)
	var page [][]byte
	if start < size {
		n := l.page
		if n == 0 {
			n = 3
		}
		page = slices.Clone(l.leaves[start:min(size, start+uint64(n))])
	}
	if l.tamper != nil {
		page, signed = l.tamper(start, page, signed)
	}
	return page, signed, nil
}

func (l *fakeLog) LogConsistency(_ context.Context, first, second uint64) ([][]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if first > second || second > l.served() {
		return nil, errors.New("consistency proof sizes out of range (test)")
	}
	if first == 0 || first == second {
		return [][]byte{}, nil
	}
	return l.tree.ConsistencyProof(first, second)
}

func (l *fakeLog) LogCheckpoint(context.Context) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return note(l.t, l.tree, l.served(), l.logKey, l.witness), nil
}

var (
	_ Log            = (*fakeLog)(nil)
	_ loghead.Source = (*fakeLog)(nil)
)

// append logs leaf.
func (l *fakeLog) append(leaf []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leaves = append(l.leaves, leaf)
	l.tree.AppendData(leaf)
}

// takeStarts returns the starts Entries was asked for since the last call.
func (l *fakeLog) takeStarts() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.starts
	l.starts = nil
	return s
}

// entry is a log entry's leaf.
func entry(t testing.TB, typ, actor string, at time.Time, details any) []byte {
	t.Helper()
	b, err := json.Marshal(details)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := tlog.Entry{Type: typ, Time: at, Actor: "spiffe://custody.test" + actor, Details: b}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func (l *fakeLog) add(typ, actor string, at time.Time, details any) {
	l.t.Helper()
	l.append(entry(l.t, typ, actor, at, details))
}

// admitLeaf is the leaf of an admission.decided entry.
func admitLeaf(t testing.TB, dgst, env, decision string, at time.Time) []byte {
	return entry(t, tlog.TypeAdmissionDecided, "/service/gatekeeper", at, map[string]string{"decision": decision, "name": "app-" + dgst[7:9], "version": "1.0.0", "digest": dgst, "environment": env})
}

func (l *fakeLog) admit(dgst, env, decision string, at time.Time) {
	l.t.Helper()
	l.append(admitLeaf(l.t, dgst, env, decision, at))
}

func (l *fakeLog) deploy(dgst, env string, at time.Time) {
	l.add(tlog.TypeDeploymentRecorded, "/service/gatekeeper", at, map[string]string{"name": "app-" + dgst[7:9], "version": "1.0.0", "digest": dgst, "environment": env})
}

func (l *fakeLog) importAdvisories(at time.Time) {
	l.add(tlog.TypeAdvisoriesImported, "/security/osv", at, map[string]any{"count": 1})
}

// fakeEvents records appended events; fail, if set, fails the next append.
type fakeEvents struct {
	mu     sync.Mutex
	events []admission.Event
	fail   error
}

func (e *fakeEvents) AppendEvent(_ context.Context, ev admission.Event) (int64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.fail; err != nil {
		e.fail = nil
		return 0, err
	}
	e.events = append(e.events, ev)
	return int64(100 + len(e.events)), nil
}

func (e *fakeEvents) findings(t *testing.T) []findingDetails {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []findingDetails
	for _, ev := range e.events {
		var d findingDetails
		if ev.Type != tlog.TypeFindingRaised || json.Unmarshal(ev.Details, &d) != nil || ev.SubjectDigest != d.Digest {
			t.Fatalf("unexpected event %s %s", ev.Type, ev.Details)
		}
		out = append(out, d)
	}
	return out
}

// fakeEvaluator answers by "digest env"; it records what it was asked.
type fakeEvaluator struct {
	mu      sync.Mutex
	denials map[string][]admission.Denial
	asked   []string
	fail    error
}

func (f *fakeEvaluator) AdvisoryDenials(_ context.Context, req admission.Request) ([]admission.Denial, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	// The store asks by name@version; the fake names are app-<2 hex>.
	var dgst string
	for _, d := range []string{dA, dB, dC, dD} {
		if req.Name == "app-"+d[7:9] || req.Digest == d {
			dgst = d
		}
	}
	k := dgst + " " + req.Environment
	f.asked = append(f.asked, k)
	return f.denials[k], nil
}

func (f *fakeEvaluator) set(dgst, env string, ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ds []admission.Denial
	for _, id := range ids {
		ds = append(ds, admission.Denial{Advisory: id, Severity: "HIGH", Components: []string{"pkg:npm/x@1.0.0"}, Reasons: []string{"affected by " + id}})
	}
	f.denials[dgst+" "+env] = ds
}

func (f *fakeEvaluator) takeAsked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.asked
	f.asked = nil
	slices.Sort(a)
	return a
}

type fixture struct {
	log    *fakeLog
	events *fakeEvents
	eval   *fakeEvaluator
	file   string
	now    time.Time
	reg    *prometheus.Registry
	store  *Store
	// root lists the witness's key for the log; head is the log head
	// tracker, kept in headFile across restarts as cmd/gatekeeper does.
	root     *trustroot.Root
	head     *loghead.Tracker
	headFile string
}

func newFixture(t testing.TB, edit func(*Config)) *fixture {
	dir := t.TempDir()
	f := &fixture{log: newFakeLog(t), events: &fakeEvents{}, eval: &fakeEvaluator{denials: map[string][]admission.Denial{}},
		file: filepath.Join(dir, "findings.json"), headFile: filepath.Join(dir, "log-head.note"), now: t0}
	f.root = trustroottest.New(t, 1).Root(1, 1, time.Now(), nil, []trustroot.LogKey{{Origin: logOrigin, VerifierKey: f.log.witnessV}})
	f.open(t, edit)
	return f
}

// open starts the store, with a new log head tracker, as a gatekeeper
// process does at start-up.
func (f *fixture) open(t testing.TB, edit func(*Config)) {
	t.Helper()
	f.reg = prometheus.NewRegistry()
	head, err := loghead.New(loghead.Config{Source: f.log, Root: func() (*trustroot.Root, error) { return f.root, nil },
		MaxAge: loghead.DefaultMaxAge, Refresh: time.Hour, File: f.headFile})
	if err != nil {
		t.Fatal(err)
	}
	f.head = head
	cfg := Config{File: f.file, Log: f.log, Events: f.events, Evaluator: f.eval, TrustDomain: td,
		Root: func() (*trustroot.Root, error) { return f.root, nil }, Head: head,
		Logger: slog.New(slog.DiscardHandler), Registry: f.reg, Now: func() time.Time { return f.now }}
	if edit != nil {
		edit(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.store = s
}

// catchUp steps until the log is read, advancing the clock a millisecond
// a step.
func (f *fixture) catchUp(t *testing.T) {
	t.Helper()
	for {
		f.now = f.now.Add(time.Millisecond)
		more, err := f.store.Step(t.Context())
		if err != nil {
			t.Fatalf("step: %v", err)
		}
		if !more {
			return
		}
	}
}

// TestOnlyAdmittedOrDeployedAndNewlyAffected: an import re-evaluates the
// (artifact, environment) pairs with an allow decision or a deployment,
// not denied or foreign ones; each newly denying advisory is one finding
// per pair, none again on a re-import or after a restart, and the latest
// finding is the pair's epoch.
func TestOnlyAdmittedOrDeployedAndNewlyAffected(t *testing.T) {
	f := newFixture(t, nil)
	f.log.admit(dA, "prod", "allow", t0)
	f.log.admit(dA, "dev", "allow", t0)
	f.log.admit(dB, "prod", "deny", t0)                                                                                                  // denied: not a target
	f.log.deploy(dC, "staging", t0)                                                                                                      // deployed: a target
	f.log.add(tlog.TypeAdmissionDecided, "/builder/ci", t0, map[string]string{"decision": "allow", "digest": dD, "environment": "prod"}) // not the gatekeeper
	f.eval.set(dA, "prod", "GHSA-1")
	f.eval.set(dB, "prod", "GHSA-1")
	f.eval.set(dC, "staging", "GHSA-1")
	f.eval.set(dD, "prod", "GHSA-1")
	f.catchUp(t)
	if a := f.eval.takeAsked(); len(a) != 0 {
		t.Fatalf("evaluated before any import: %v", a)
	}

	f.log.importAdvisories(t0.Add(time.Minute))
	f.catchUp(t)
	if a, want := f.eval.takeAsked(), []string{dA + " dev", dA + " prod", dC + " staging"}; !slices.Equal(a, want) {
		t.Fatalf("evaluated %v, want %v", a, want)
	}
	got := f.events.findings(t)
	if len(got) != 2 || got[0].Digest != dA || got[0].Environment != "prod" || got[1].Digest != dC || got[1].Environment != "staging" ||
		got[0].Advisory != "GHSA-1" || got[0].ImportIndex != 5 || got[0].Name != "app-aa" {
		t.Fatalf("findings %+v, want dA prod and dC staging for GHSA-1 (import 5)", got)
	}
	if n := testutil.ToFloat64(f.store.raisedTotal.WithLabelValues("prod", "HIGH")); n != 1 {
		t.Fatalf("raised{prod,HIGH} = %v, want 1", n)
	}
	epochs, overflow := f.store.Epochs()
	if len(epochs) != 2 || epochs[0].Digest != dA || epochs[1].Digest != dC || !overflow.IsZero() || epochs[0].Advisory != "GHSA-1" {
		t.Fatalf("epochs %+v overflow %v", epochs, overflow)
	}
	first := epochs[0].Time

	// Re-import: evaluated again, nothing new.
	f.log.importAdvisories(t0.Add(2 * time.Minute))
	f.catchUp(t)
	if n := len(f.events.findings(t)); n != 2 {
		t.Fatalf("%d findings after a re-import, want 2", n)
	}
	// A restart keeps what was raised and where the log was read.
	f.open(t, nil)
	f.log.importAdvisories(t0.Add(3 * time.Minute))
	f.eval.takeAsked()
	f.catchUp(t)
	if n := len(f.events.findings(t)); n != 2 {
		t.Fatalf("%d findings after a restart and re-import, want 2", n)
	}
	// A second advisory for dA in prod: one more finding, the epoch moves.
	f.eval.set(dA, "prod", "GHSA-1", "GHSA-2")
	f.log.importAdvisories(t0.Add(4 * time.Minute))
	f.catchUp(t)
	got = f.events.findings(t)
	if len(got) != 3 || got[2].Advisory != "GHSA-2" || got[2].Digest != dA {
		t.Fatalf("findings %+v, want a third for GHSA-2", got)
	}
	epochs, _ = f.store.Epochs()
	if epochs[0].Advisory != "GHSA-2" || !epochs[0].Time.After(first) {
		t.Fatalf("epoch of dA prod %+v, want GHSA-2 after %v", epochs[0], first)
	}
}

// TestFailsWithoutLosingWork: a log that cannot be read, an artifact that
// cannot be evaluated or a finding that cannot be logged fail the step;
// the same page is read again and the finding is raised once it can be
// logged, exactly once.
func TestFailsWithoutLosingWork(t *testing.T) {
	f := newFixture(t, nil)
	f.log.admit(dA, "prod", "allow", t0)
	f.log.importAdvisories(t0.Add(time.Second))
	f.eval.set(dA, "prod", "GHSA-1")

	f.log.fail = errors.New("catalog down")
	if _, err := f.store.Step(t.Context()); err == nil {
		t.Fatal("step with the log down succeeded")
	}
	f.eval.fail = admission.ErrUnavailable
	if _, err := f.store.Step(t.Context()); !errors.Is(err, admission.ErrUnavailable) {
		t.Fatalf("step with the evaluation failing: %v", err)
	}
	f.eval.fail = nil
	f.events.fail = errors.New("catalog down")
	if _, err := f.store.Step(t.Context()); err == nil {
		t.Fatal("step with the finding unloggable succeeded")
	}
	if e, _ := f.store.Epochs(); len(e) != 0 {
		t.Fatalf("an unlogged finding has an epoch: %+v", e)
	}
	f.catchUp(t)
	if got := f.events.findings(t); len(got) != 1 {
		t.Fatalf("findings %+v, want exactly one", got)
	}
	if e, _ := f.store.Epochs(); len(e) != 1 {
		t.Fatalf("epochs %+v, want one", e)
	}
}

// TestImportWindow: the catalog logs an import before it stores the
// advisories, so an artifact first admitted within ImportWindow after an
// import is evaluated too; one admitted later was admitted knowing them.
func TestImportWindow(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Retention = 24 * time.Hour })
	f.log.importAdvisories(t0)
	f.log.admit(dA, "prod", "allow", t0.Add(time.Second))
	f.log.admit(dB, "prod", "allow", t0.Add(ImportWindow+time.Second))
	f.eval.set(dA, "prod", "GHSA-1")
	f.eval.set(dB, "prod", "GHSA-1")
	f.catchUp(t)
	if a, want := f.eval.takeAsked(), []string{dA + " prod"}; !slices.Equal(a, want) {
		t.Fatalf("evaluated %v, want %v", a, want)
	}
}

// TestEpochBounds: epochs older than the retention leave the stop state;
// past MaxEpochs a finding moves the overflow epoch instead, which
// replaces every per-artifact epoch before it; the list stays bounded.
func TestEpochBounds(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxEpochs = 2; c.Retention = time.Hour })
	for _, d := range []string{dA, dB, dC} {
		f.log.admit(d, "prod", "allow", t0)
		f.eval.set(d, "prod", "GHSA-1")
	}
	f.log.importAdvisories(t0)
	f.catchUp(t)
	epochs, overflow := f.store.Epochs()
	if len(f.events.findings(t)) != 3 {
		t.Fatalf("findings %+v, want 3", f.events.findings(t))
	}
	if overflow.IsZero() || len(epochs) != 0 {
		t.Fatalf("epochs %+v, overflow %v: want the third finding to overflow and replace the list", epochs, overflow)
	}
	if n := testutil.ToFloat64(f.store.overflows); n != 1 {
		t.Fatalf("overflows = %v, want 1", n)
	}
	// A later finding starts the list again.
	f.log.admit(dD, "prod", "allow", f.now)
	f.eval.set(dD, "prod", "GHSA-2")
	f.log.importAdvisories(f.now)
	f.catchUp(t)
	epochs, _ = f.store.Epochs()
	if len(epochs) != 1 || epochs[0].Digest != dD {
		t.Fatalf("epochs %+v, want dD's only", epochs)
	}
	// Past the retention it leaves the stop state; the finding is not
	// raised again.
	f.now = f.now.Add(2 * time.Hour)
	if epochs, _ = f.store.Epochs(); len(epochs) != 0 {
		t.Fatalf("epochs after the retention: %+v", epochs)
	}
	f.log.importAdvisories(f.now)
	f.catchUp(t)
	if n := len(f.events.findings(t)); n != 4 {
		t.Fatalf("%d findings, want 4", n)
	}
}

// TestTargetBound: past MaxTargets the least recently seen never-deployed
// pair is dropped (and counted); a deployed one is kept.
func TestTargetBound(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxTargets = 2 })
	f.log.deploy(dA, "prod", t0)
	f.log.admit(dB, "prod", "allow", t0.Add(time.Second))
	f.log.admit(dC, "prod", "allow", t0.Add(2*time.Second))
	f.catchUp(t)
	if n := testutil.ToFloat64(f.store.droppedTotal); n != 1 {
		t.Fatalf("dropped = %v, want 1", n)
	}
	f.log.importAdvisories(t0.Add(time.Hour))
	f.catchUp(t)
	if a, want := f.eval.takeAsked(), []string{dA + " prod", dC + " prod"}; !slices.Equal(a, want) {
		t.Fatalf("evaluated %v, want %v", a, want)
	}
}

// TestCorruptStateRefused: a state file that does not parse stops the
// start instead of raising every finding again.
func TestCorruptStateRefused(t *testing.T) {
	f := newFixture(t, nil)
	f.log.admit(dA, "prod", "allow", t0)
	f.catchUp(t)
	if err := os.WriteFile(f.file, []byte(`{"next": 1, "unknown": true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Config{File: f.file, Log: f.log, Events: f.events, Evaluator: f.eval, TrustDomain: td,
		Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err == nil {
		t.Fatal("a corrupt state file was accepted")
	}
}

// TestDryRunFindingMovesNoEpoch: in a dry-run environment the finding is
// logged (marked dry_run, no epoch_time) but refuses nothing.
func TestDryRunFindingMovesNoEpoch(t *testing.T) {
	f := newFixture(t, nil)
	f.log.admit(dA, "staging", "allow", t0)
	f.log.importAdvisories(t0)
	f.eval.denials[dA+" staging"] = []admission.Denial{{Advisory: "GHSA-1", Severity: "CRITICAL", DryRun: true}}
	f.catchUp(t)
	got := f.events.findings(t)
	if len(got) != 1 || !got[0].DryRun || got[0].EpochTime != nil {
		t.Fatalf("findings %+v, want one dry-run finding without an epoch", got)
	}
	if e, o := f.store.Epochs(); len(e) != 0 || !o.IsZero() {
		t.Fatalf("epochs %+v overflow %v, want none", e, o)
	}
}

// TestHostileEntriesIgnored: an import logged by a builder, and entries
// naming a malformed digest or environment, change nothing.
func TestHostileEntriesIgnored(t *testing.T) {
	f := newFixture(t, nil)
	f.log.admit(dA, "prod", "allow", t0)
	f.log.add(tlog.TypeAdvisoriesImported, "/builder/ci", t0, map[string]any{"count": 1})
	f.log.add(tlog.TypeAdmissionDecided, "/service/gatekeeper", t0, map[string]string{"decision": "allow", "digest": "sha256:../../x", "environment": "prod"})
	f.log.add(tlog.TypeAdmissionDecided, "/service/gatekeeper", t0, map[string]string{"decision": "allow", "digest": dB, "environment": "Prod\n"})
	f.eval.set(dA, "prod", "GHSA-1")
	f.catchUp(t)
	if a := f.eval.takeAsked(); len(a) != 0 || len(f.events.findings(t)) != 0 {
		t.Fatalf("evaluated %v, raised %d after hostile entries, want nothing", a, len(f.events.findings(t)))
	}
	f.log.importAdvisories(t0)
	f.catchUp(t)
	if a, want := f.eval.takeAsked(), []string{dA + " prod"}; !slices.Equal(a, want) {
		t.Fatalf("evaluated %v, want %v: the malformed entries must not be targets", a, want)
	}
}

// FuzzStep: log leaves from the catalog are untrusted bytes. Whatever a
// leaf holds, Step does not panic, and a finding is raised only for a
// target that an entry by the gatekeeper admitted or deployed.
func FuzzStep(f *testing.F) {
	good, _ := tlog.Entry{Type: tlog.TypeAdmissionDecided, Time: t0, Actor: "spiffe://custody.test/service/gatekeeper",
		Details: []byte(`{"decision":"allow","digest":"` + dA + `","environment":"prod"}`)}.Marshal()
	f.Add(good)
	f.Add([]byte(`{"type":"deployment.recorded","time":"2026-12-03T12:00:00Z","actor":"spiffe://custody.test/builder/x","details":{"digest":"` + dA + `","environment":"prod"}}`))
	f.Add([]byte(`{"type":"admission.decided","time":"2026-12-03T12:00:00Z","actor":"spiffe://custody.test/service/gatekeeper","details":{"decision":"allow","digest":1}}`))
	f.Add([]byte("\x00{"))
	f.Fuzz(func(t *testing.T, leaf []byte) {
		fx := newFixture(t, nil)
		fx.log.page = 10
		fx.log.append(leaf)
		fx.log.importAdvisories(t0)
		fx.eval.set(dA, "prod", "GHSA-1")
		for range 3 {
			if _, err := fx.store.Step(t.Context()); err != nil {
				t.Fatalf("step: %v", err)
			}
		}
		raised := fx.events.findings(t)
		if len(raised) == 0 {
			return
		}
		e, err := tlog.ParseEntry(leaf)
		if err != nil || e.Actor != "spiffe://custody.test/service/gatekeeper" || len(raised) != 1 || raised[0].Digest != dA {
			t.Fatalf("raised %+v from leaf %q", raised, leaf)
		}
	})
}
