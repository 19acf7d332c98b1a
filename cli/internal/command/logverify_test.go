package command

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
)

const testLogOrigin = "custody.test/log"

// fakeLog is a log in memory whose checkpoints are signed by the log key
// and cosigned by the cosigner key it is given, as the catalog serves them.
type fakeLog struct {
	t           *testing.T
	tree        *testonly.Tree
	skey, cskey string
}

func (l *fakeLog) add(prefix string, n int) {
	for i := range n {
		l.tree.AppendData(fmt.Appendf(nil, "%s %d", prefix, i))
	}
}

func (l *fakeLog) Checkpoint(context.Context) ([]byte, error) {
	b, err := tlog.SignCheckpoint(tlog.Checkpoint{Origin: testLogOrigin, Size: l.tree.Size(), Hash: l.tree.Hash()}, l.skey)
	if err != nil {
		return nil, err
	}
	return tlog.CosignCheckpoint(b, l.cskey)
}

func (l *fakeLog) Consistency(_ context.Context, first, second uint64) ([][]byte, error) {
	return l.tree.ConsistencyProof(first, second)
}

func newFakeLog(t *testing.T, skey, cskey string) *fakeLog {
	return &fakeLog{t: t, tree: testonly.New(rfc6962.DefaultHasher), skey: skey, cskey: cskey}
}

// logWorld is a log key, a cosigner key and a trust root listing the
// cosigner's key for the log.
func logWorld(t *testing.T) (skey, cskey string, root *trustroot.Root) {
	t.Helper()
	skey, _, err := tlog.GenerateKey(testLogOrigin)
	if err != nil {
		t.Fatal(err)
	}
	cskey, cvkey, err := tlog.GenerateCosignerKey("custody.test/signer")
	if err != nil {
		t.Fatal(err)
	}
	return skey, cskey, &trustroot.Root{Version: 3, LogKeys: []trustroot.LogKey{{Origin: testLogOrigin, VerifierKey: cvkey}}}
}

func TestCheckLog(t *testing.T) {
	skey, cskey, root := logWorld(t)
	state := filepath.Join(t.TempDir(), "state", "log.json")
	l := newFakeLog(t, skey, cskey)
	l.add("a", 5)
	ctx := t.Context()
	steps := []struct {
		grow   int
		status string
		size   uint64
	}{{0, "first-use", 5}, {0, "consistent", 5}, {17, "consistent", 22}, {300, "consistent", 322}}
	for _, st := range steps {
		l.add("b", st.grow)
		rep, err := checkLog(ctx, l, logCheck{Root: root, StatePath: state})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Status != st.status || rep.Current.Size != st.size {
			t.Fatalf("checkLog = %s at %d, want %s at %d", rep.Status, rep.Current.Size, st.status, st.size)
		}
	}
	kept, err := loadLogState(state)
	if err != nil || kept.Size != 322 {
		t.Fatalf("state = %+v, %v; want size 322", kept, err)
	}
}

// TestCheckLogReportsFork runs two logs with the same keys (a catalog key
// and a cosigner key both in an attacker's hands) that diverge: the one
// seen second is reported as a fork, with both checkpoints, and the state
// keeps the first.
func TestCheckLogReportsFork(t *testing.T) {
	for _, tt := range []struct {
		name         string
		honest, fork int
	}{{"larger fork", 3, 9}, {"same size", 4, 4}, {"rolled back", 8, 2}} {
		t.Run(tt.name, func(t *testing.T) {
			skey, cskey, root := logWorld(t)
			state := filepath.Join(t.TempDir(), "log.json")
			honest, forked := newFakeLog(t, skey, cskey), newFakeLog(t, skey, cskey)
			honest.add("common", 10)
			forked.add("common", 10)
			honest.add("honest", tt.honest)
			forked.add("forged", tt.fork)
			if rep, err := checkLog(t.Context(), honest, logCheck{Root: root, StatePath: state}); err != nil || rep.Status != "first-use" {
				t.Fatalf("first check = %+v, %v", rep, err)
			}
			rep, err := checkLog(t.Context(), forked, logCheck{Root: root, StatePath: state})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Status != "fork" || rep.Previous == nil || rep.Previous.Size != uint64(10+tt.honest) || rep.Current.Size != uint64(10+tt.fork) ||
				len(rep.Previous.Checkpoint) == 0 || len(rep.Current.Checkpoint) == 0 {
				t.Fatalf("fork check = %+v", rep)
			}
			if kept, _ := loadLogState(state); kept.Size != uint64(10+tt.honest) {
				t.Errorf("state moved to the fork: %+v", kept)
			}
			// The honest log still checks out.
			if rep, err := checkLog(t.Context(), honest, logCheck{Root: root, StatePath: state}); err != nil || rep.Status != "consistent" {
				t.Errorf("honest log after the fork = %+v, %v", rep, err)
			}
		})
	}
}

func TestCheckLogRefuses(t *testing.T) {
	skey, cskey, root := logWorld(t)
	_, otherCosigner, _ := logWorld(t)
	l := newFakeLog(t, skey, otherCosigner)
	l.add("a", 2)
	if _, err := checkLog(t.Context(), l, logCheck{Root: root, StatePath: filepath.Join(t.TempDir(), "s.json")}); err == nil || !strings.Contains(err.Error(), "not signed by") {
		t.Errorf("checkpoint cosigned by a key outside the trust root: %v", err)
	}
	_ = cskey
	noLog := &trustroot.Root{Version: 1}
	if _, err := checkLog(t.Context(), newFakeLog(t, skey, cskey), logCheck{Root: noLog, StatePath: filepath.Join(t.TempDir(), "s.json")}); err == nil || !strings.Contains(err.Error(), "lists no key") {
		t.Errorf("log not in the trust root: %v", err)
	}
}

// TestCheckLogRefusesStale: with a maximum age, a checkpoint co-signed
// longer ago is refused (a frozen log, a withheld view) and the state file
// does not move; within the age, or with no limit, it passes.
func TestCheckLogRefusesStale(t *testing.T) {
	skey, cskey, root := logWorld(t)
	state := filepath.Join(t.TempDir(), "log.json")
	l := newFakeLog(t, skey, cskey)
	l.add("a", 3)
	now := time.Now()
	if _, err := checkLog(t.Context(), l, logCheck{Root: root, StatePath: state, MaxAge: 10 * time.Minute, Now: now}); err != nil {
		t.Fatalf("fresh checkpoint: %v", err)
	}
	l.add("b", 2)
	_, err := checkLog(t.Context(), l, logCheck{Root: root, StatePath: state, MaxAge: 10 * time.Minute, Now: now.Add(time.Hour)})
	if !errors.Is(err, tlog.ErrStale) || !strings.Contains(err.Error(), "maximum age 10m0s") {
		t.Fatalf("checkpoint co-signed an hour before: %v, want ErrStale naming the maximum age", err)
	}
	if kept, _ := loadLogState(state); kept == nil || kept.Size != 3 {
		t.Errorf("a stale checkpoint moved the state: %+v", kept)
	}
	if rep, err := checkLog(t.Context(), l, logCheck{Root: root, StatePath: state, Now: now.Add(time.Hour)}); err != nil || rep.Status != "consistent" {
		t.Errorf("no maximum age: %+v, %v", rep, err)
	}
}

// TestLogVerifyMaxAgeDefault: custody log verify refuses a checkpoint
// older than 10 minutes unless told otherwise (decision 0114): an idle
// catalog has its checkpoint co-signed again every 30 s.
func TestLogVerifyMaxAgeDefault(t *testing.T) {
	verify, _, err := (&cli{}).logCmd().Find([]string{"verify"})
	if err != nil {
		t.Fatal(err)
	}
	f := verify.Flags().Lookup("max-age")
	if f == nil || f.DefValue != (10*time.Minute).String() {
		t.Fatalf("log verify --max-age default = %v, want 10m0s", f)
	}
}
