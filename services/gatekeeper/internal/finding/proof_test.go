package finding

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
)

// honestStart logs dA admitted to prod and an import, reads them (one
// finding), then logs dB admitted to prod and a second import, unread:
// the page an attack is made on.
func honestStart(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t, nil)
	f.log.page = 10
	f.log.admit(dA, "prod", "allow", t0)
	f.log.importAdvisories(t0.Add(time.Minute))
	f.eval.set(dA, "prod", "GHSA-1")
	f.eval.set(dB, "prod", "GHSA-1")
	f.catchUp(t)
	if n := len(f.events.findings(t)); n != 1 {
		t.Fatalf("%d findings before the attack, want 1", n)
	}
	f.eval.takeAsked()
	f.log.admit(dB, "prod", "allow", t0.Add(2*time.Minute))
	f.log.importAdvisories(t0.Add(3 * time.Minute))
	return f
}

// forgedTree is the fake's log with its leaves from index at replaced by
// leaves.
func forgedTree(l *fakeLog, at int, leaves ...[]byte) *testonly.Tree {
	l.mu.Lock()
	defer l.mu.Unlock()
	tree := testonly.New(rfc6962.DefaultHasher)
	tree.AppendData(l.leaves[:at]...)
	tree.AppendData(leaves...)
	return tree
}

// TestHonestLogProvedAndActedOn: every page of an honest log proves
// (against the checkpoint, by a consistency proof where the page ends
// before it), is acted on, and the saved range is the log's.
func TestHonestLogProvedAndActedOn(t *testing.T) {
	f := newFixture(t, nil) // pages of 3: most end before the checkpoint
	for i, d := range []string{dA, dB, dC, dD} {
		f.log.admit(d, "prod", "allow", t0.Add(time.Duration(i)*time.Second))
		f.eval.set(d, "prod", "GHSA-1")
	}
	f.log.importAdvisories(t0.Add(time.Minute))
	f.log.admit(dA, "dev", "allow", t0.Add(2*time.Minute))
	f.catchUp(t)
	if n := len(f.events.findings(t)); n != 4 {
		t.Fatalf("%d findings, want 4", n)
	}
	if starts, want := f.log.takeStarts(), []uint64{0, 3, 6}; !slices.Equal(starts, want) {
		t.Fatalf("read from %v, want %v", starts, want)
	}
	var st state
	b, err := os.ReadFile(f.file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	r, err := st.compactRange()
	if err != nil {
		t.Fatal(err)
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Next != 6 || r.End() != 6 || !bytes.Equal(root, f.log.tree.HashAt(6)) {
		t.Fatalf("saved position %d, range of %d with root %x; want 6 and the log's root %x", st.Next, r.End(), root, f.log.tree.HashAt(6))
	}
	if n := testutil.ToFloat64(f.store.proofFailures); n != 0 {
		t.Fatalf("proof failures = %v on an honest log", n)
	}
}

// TestUnprovedPagesActOnNothing: a catalog that alters, drops, inserts or
// reorders an entry, serves a page beyond its checkpoint, withholds
// entries, serves a checkpoint that does not open or that forks from the
// log head, or was rolled back, has the step fail with ErrUnproved: no
// evaluation, no finding, the saved state unchanged, the failure counted
// by Run. Once the catalog is honest again the page is read and acted on.
func TestUnprovedPagesActOnNothing(t *testing.T) {
	forged := func(t *testing.T) []byte { return admitLeaf(t, dC, "prod", "allow", t0.Add(2*time.Minute)) }
	for _, tc := range []struct {
		name string
		// attack sets the fake up to lie; it returns an undo, or nil.
		attack func(t *testing.T, f *fixture) func()
		// restart: the tracker holds a fork until the gatekeeper restarts.
		restart bool
	}{
		{name: "entry altered", attack: func(t *testing.T, f *fixture) func() {
			f.log.tamper = func(start uint64, page [][]byte, cp []byte) ([][]byte, []byte) {
				page[0] = forged(t)
				return page, cp
			}
			return nil
		}},
		{name: "entry dropped", attack: func(t *testing.T, f *fixture) func() {
			f.log.tamper = func(start uint64, page [][]byte, cp []byte) ([][]byte, []byte) { return page[1:], cp }
			return nil
		}},
		{name: "entry inserted", attack: func(t *testing.T, f *fixture) func() {
			f.log.tamper = func(start uint64, page [][]byte, cp []byte) ([][]byte, []byte) {
				return append([][]byte{page[0], forged(t)}, page[1:]...)[:len(page)], cp
			}
			return nil
		}},
		{name: "entries reordered", attack: func(t *testing.T, f *fixture) func() {
			f.log.tamper = func(start uint64, page [][]byte, cp []byte) ([][]byte, []byte) {
				page[0], page[1] = page[1], page[0]
				return page, cp
			}
			return nil
		}},
		{name: "page beyond the checkpoint", attack: func(t *testing.T, f *fixture) func() {
			f.log.tamper = func(start uint64, page [][]byte, cp []byte) ([][]byte, []byte) { return append(page, forged(t)), cp }
			return nil
		}},
		{name: "entries withheld", attack: func(t *testing.T, f *fixture) func() {
			f.log.tamper = func(start uint64, page [][]byte, cp []byte) ([][]byte, []byte) { return nil, cp }
			return nil
		}},
		{name: "checkpoint not co-signed", attack: func(t *testing.T, f *fixture) func() {
			// The catalog holds the log's key; the signer co-signs only a
			// tree consistent with the one it co-signed before.
			tree := forgedTree(f.log, 2, forged(t))
			f.log.tamper = func(start uint64, page [][]byte, cp []byte) ([][]byte, []byte) {
				return [][]byte{forged(t)}, note(t, tree, tree.Size(), f.log.logKey, "")
			}
			return nil
		}},
		{name: "checkpoint co-signed by another key", attack: func(t *testing.T, f *fixture) func() {
			other, _, err := tlog.GenerateCosignerKey(witnessName)
			if err != nil {
				t.Fatal(err)
			}
			f.log.tamper = func(start uint64, page [][]byte, cp []byte) ([][]byte, []byte) {
				return page, note(t, f.log.tree, f.log.tree.Size(), f.log.logKey, other)
			}
			return nil
		}},
		{name: "checkpoint forked from the log head", restart: true, attack: func(t *testing.T, f *fixture) func() {
			// Co-signed (a signer that was fooled or compromised), and the
			// leaves are its tree's: only the log head, which the catalog
			// serves everyone else from the real tree, tells.
			evil := forged(t)
			tree := forgedTree(f.log, 2, evil, f.log.leaves[3])
			f.log.tamper = func(start uint64, page [][]byte, cp []byte) ([][]byte, []byte) {
				return [][]byte{evil, page[1]}, note(t, tree, tree.Size(), f.log.logKey, f.log.witness)
			}
			return nil
		}},
		{name: "catalog rolled back", attack: func(t *testing.T, f *fixture) func() {
			// Restored from a backup of before the first import, and
			// grown again: the checkpoint opens and is a prefix of the
			// head, but smaller than what was read.
			f.log.size = 1
			return func() { f.log.size = 0 }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := honestStart(t)
			before, err := os.ReadFile(f.file)
			if err != nil {
				t.Fatal(err)
			}
			undo := tc.attack(t, f)
			for range 2 {
				_, err := f.store.Step(t.Context())
				if !errors.Is(err, ErrUnproved) {
					t.Fatalf("step under attack: %v, want ErrUnproved", err)
				}
			}
			if a := f.eval.takeAsked(); len(a) != 0 {
				t.Fatalf("evaluated %v under attack", a)
			}
			if n := len(f.events.findings(t)); n != 1 {
				t.Fatalf("%d findings under attack, want still 1", n)
			}
			after, err := os.ReadFile(f.file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) || f.store.st.Next != 2 {
				t.Fatalf("state moved under attack: position %d, file\n%s\nwas\n%s", f.store.st.Next, after, before)
			}
			// Run counts it.
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() { _ = f.store.Run(ctx); close(done) }()
			waitFor(t, func() bool { return testutil.ToFloat64(f.store.proofFailures) >= 1 })
			cancel()
			<-done
			if n := testutil.ToFloat64(f.store.lastSuccess); n != 0 {
				t.Fatalf("last success = %v under attack, want 0 (CustodyReevaluationStalled)", n)
			}
			if testutil.ToFloat64(f.store.errorsTotal) < 1 {
				t.Fatal("errors not counted")
			}

			f.log.tamper = nil
			if undo != nil {
				undo()
			}
			if tc.restart {
				if _, err := f.store.Step(t.Context()); !errors.Is(err, ErrUnproved) {
					t.Fatalf("step after a fork, before a restart: %v, want ErrUnproved", err)
				}
				f.open(t, nil)
			}
			f.catchUp(t)
			got := f.events.findings(t)
			if len(got) != 2 || got[1].Digest != dB {
				t.Fatalf("findings %+v after the catalog is honest again, want dB's second", got)
			}
		})
	}
}

// TestRestartWithRange: a state file with the proved range resumes
// reading where it stopped, and keeps proving.
func TestRestartWithRange(t *testing.T) {
	f := honestStart(t)
	f.log.takeStarts()
	f.open(t, nil)
	f.catchUp(t)
	if starts := f.log.takeStarts(); len(starts) == 0 || starts[0] != 2 {
		t.Fatalf("read from %v after a restart, want from 2", starts)
	}
	if got := f.events.findings(t); len(got) != 2 || got[1].Digest != dB {
		t.Fatalf("findings %+v, want dB's second", got)
	}
	// And a lie after the restart is still caught: the range was kept.
	f.log.admit(dC, "prod", "allow", t0.Add(4*time.Minute))
	f.open(t, nil)
	f.log.tamper = func(start uint64, page [][]byte, cp []byte) ([][]byte, []byte) {
		return [][]byte{admitLeaf(t, dD, "prod", "allow", t0)}, cp
	}
	if _, err := f.store.Step(t.Context()); !errors.Is(err, ErrUnproved) {
		t.Fatalf("altered entry after a restart: %v, want ErrUnproved", err)
	}
}

// withoutRange rewrites the state file as a gatekeeper before decision
// 0119 wrote it: no proved range.
func withoutRange(t *testing.T, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["range"]; !ok {
		t.Fatalf("no range in %s", b)
	}
	delete(m, "range")
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRestartWithoutRange: a state file without a range (position 5) is
// upgraded by reading and proving entries 0..5 again without acting on
// them (no evaluation, no finding again); the page that crosses the
// position acts on the entries past it only; then it continues as usual.
func TestRestartWithoutRange(t *testing.T) {
	f := newFixture(t, nil) // pages of 3: the rebuild takes two pages, the second crosses the position
	f.log.admit(dA, "prod", "allow", t0)
	f.log.admit(dB, "prod", "allow", t0)
	f.log.importAdvisories(t0.Add(time.Minute))
	f.log.deploy(dC, "prod", t0.Add(2*time.Minute))
	f.log.importAdvisories(t0.Add(3 * time.Minute))
	f.eval.set(dA, "prod", "GHSA-1")
	f.catchUp(t)
	if n := len(f.events.findings(t)); n != 1 || f.store.st.Next != 5 {
		t.Fatalf("%d findings at position %d, want 1 at 5", n, f.store.st.Next)
	}
	withoutRange(t, f.file)
	f.log.importAdvisories(t0.Add(4 * time.Minute)) // entry 5, in the crossing page
	f.eval.set(dC, "prod", "GHSA-2")
	f.eval.takeAsked()
	f.log.takeStarts()

	f.open(t, nil)
	if f.store.st.Range != nil {
		t.Fatalf("range %+v after loading a file without one", f.store.st.Range)
	}
	if more, err := f.store.Step(t.Context()); err != nil || !more {
		t.Fatalf("first rebuild step: more %v, %v", more, err)
	}
	if a := f.eval.takeAsked(); len(a) != 0 || len(f.events.findings(t)) != 1 {
		t.Fatalf("rebuilding entries 0-2 evaluated %v and raised %d, want nothing", a, len(f.events.findings(t))-1)
	}
	if f.store.st.Next != 5 || f.store.st.Range.Size != 3 {
		t.Fatalf("position %d, range %d after the first rebuild page; want 5 and 3", f.store.st.Next, f.store.st.Range.Size)
	}
	f.catchUp(t)
	if starts, want := f.log.takeStarts(), []uint64{0, 3, 6}; !slices.Equal(starts, want) {
		t.Fatalf("read from %v, want %v", starts, want)
	}
	// Only entry 5 (an import) was acted on: every target evaluated once,
	// the one new advisory raised.
	if a, want := f.eval.takeAsked(), []string{dA + " prod", dB + " prod", dC + " prod"}; !slices.Equal(a, want) {
		t.Fatalf("evaluated %v, want %v", a, want)
	}
	got := f.events.findings(t)
	if len(got) != 2 || got[1].Digest != dC || got[1].Advisory != "GHSA-2" || got[1].ImportIndex != 5 {
		t.Fatalf("findings %+v, want dC's GHSA-2 from import 5 only", got)
	}
	if f.store.st.Next != 6 || f.store.st.Range.Size != 6 {
		t.Fatalf("position %d, range %d; want 6 and 6", f.store.st.Next, f.store.st.Range.Size)
	}
}

// TestRebuildOfLiedHistoryFails: rebuilding the range of a file without
// one proves the entries already read too; a catalog that serves them
// altered fails it, and nothing is acted on or saved.
func TestRebuildOfLiedHistoryFails(t *testing.T) {
	f := newFixture(t, nil)
	f.log.admit(dA, "prod", "allow", t0)
	f.log.importAdvisories(t0.Add(time.Minute))
	f.catchUp(t)
	f.eval.takeAsked()
	withoutRange(t, f.file)
	before, err := os.ReadFile(f.file)
	if err != nil {
		t.Fatal(err)
	}
	f.log.importAdvisories(t0.Add(2 * time.Minute))
	f.eval.set(dA, "prod", "GHSA-1")
	f.open(t, nil)
	f.log.tamper = func(start uint64, page [][]byte, cp []byte) ([][]byte, []byte) {
		if start == 0 {
			page[0] = admitLeaf(t, dB, "prod", "allow", t0)
		}
		return page, cp
	}
	if _, err := f.store.Step(t.Context()); !errors.Is(err, ErrUnproved) {
		t.Fatalf("rebuild over an altered entry: %v, want ErrUnproved", err)
	}
	after, err := os.ReadFile(f.file)
	if err != nil {
		t.Fatal(err)
	}
	if a := f.eval.takeAsked(); len(a) != 0 || len(f.events.findings(t)) != 0 || !bytes.Equal(before, after) {
		t.Fatalf("evaluated %v, raised %d, state changed %v: want nothing", a, len(f.events.findings(t)), !bytes.Equal(before, after))
	}
}

// TestCorruptRangeRefused: a saved range that cannot be the log's start
// (larger than the position, the wrong number or size of hashes) stops
// the start.
func TestCorruptRangeRefused(t *testing.T) {
	h := make([]byte, 32)
	for _, tc := range []struct {
		name  string
		state map[string]any
	}{
		{"range past the position", map[string]any{"next": 1, "last_import": -1, "range": map[string]any{"size": 2, "hashes": [][]byte{h}}}},
		{"too few hashes", map[string]any{"next": 3, "last_import": -1, "range": map[string]any{"size": 3, "hashes": [][]byte{h}}}},
		{"short hash", map[string]any{"next": 1, "last_import": -1, "range": map[string]any{"size": 1, "hashes": [][]byte{h[:31]}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			b, err := json.Marshal(tc.state)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.file, b, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = Open(Config{File: f.file, Log: f.log, Events: f.events, Evaluator: f.eval, TrustDomain: td,
				Root: func() (*trustroot.Root, error) { return f.root, nil }, Head: f.head,
				Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
			if err == nil {
				t.Fatalf("state %s accepted", b)
			}
		})
	}
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
	}
}
