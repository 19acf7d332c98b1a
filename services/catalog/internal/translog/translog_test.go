package translog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/custody-dev/custody/libs/tlog"
)

func openLog(t *testing.T, dir, skey string) *Log {
	t.Helper()
	l, err := Open(t.Context(), Config{Dir: dir, SignerKey: skey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

func newKey(t *testing.T) (string, string) {
	t.Helper()
	skey, vkey, err := tlog.GenerateKey("custody.test/log")
	if err != nil {
		t.Fatal(err)
	}
	return skey, vkey
}

func TestVerifierKeyMatchesGenerated(t *testing.T) {
	skey, vkey := newKey(t)
	got, err := verifierKey(skey + "\n")
	if err != nil || got != vkey {
		t.Errorf("verifierKey = %q, %v; want %q", got, err, vkey)
	}
	for _, bad := range []string{"", vkey, "PRIVATE+KEY+x+00000000+AAAA", "PRIVATE+KEY+x+00000000+!!"} {
		if _, err := verifierKey(bad); err == nil {
			t.Errorf("verifierKey(%q): want an error", bad)
		}
	}
}

func TestAppendProveFind(t *testing.T) {
	skey, vkey := newKey(t)
	l := openLog(t, t.TempDir(), skey)
	if l.VerifierKey() != vkey || l.Origin() != "custody.test/log" {
		t.Errorf("key %q origin %q", l.VerifierKey(), l.Origin())
	}
	signed, cp, err := l.Checkpoint(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != 0 {
		t.Errorf("new log has size %d", cp.Size)
	}
	if _, err := tlog.OpenCheckpoint(signed, vkey); err != nil {
		t.Errorf("empty checkpoint: %v", err)
	}

	// More than one entry bundle (256), appended concurrently.
	const n = 300
	leaves := make([][]byte, n)
	got := make([]*Proved, n)
	var wg sync.WaitGroup
	for i := range n {
		leaves[i] = fmt.Appendf(nil, `{"n":%d}`, i)
		wg.Go(func() {
			p, err := l.Append(t.Context(), leaves[i])
			if err != nil {
				t.Errorf("append %d: %v", i, err)
				return
			}
			got[i] = p
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	seen := map[uint64]bool{}
	for i, p := range got {
		cp, err := tlog.OpenCheckpoint(p.Checkpoint, vkey)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.VerifyInclusion(leaves[i], p.Index, p.Proof, cp); err != nil {
			t.Errorf("entry %d: %v", i, err)
		}
		if seen[p.Index] {
			t.Errorf("index %d assigned twice", p.Index)
		}
		seen[p.Index] = true
		idx, found, err := l.Find(t.Context(), leaves[i], 0)
		if err != nil || !found || idx != p.Index {
			t.Errorf("Find(entry %d) = %d, %v, %v; want %d", i, idx, found, err, p.Index)
		}
		if _, found, _ := l.Find(t.Context(), leaves[i], p.Index+1); found {
			t.Errorf("Find(entry %d) after its index found it", i)
		}
	}
	if _, found, err := l.Find(t.Context(), []byte("absent"), 0); found || err != nil {
		t.Errorf("Find(absent) = %v, %v", found, err)
	}

	// Re-proving an existing entry, and refusing a wrong leaf.
	if _, err := l.Prove(t.Context(), got[7].Index, leaves[7]); err != nil {
		t.Errorf("Prove: %v", err)
	}
	if _, err := l.Prove(t.Context(), got[7].Index, leaves[8]); !errors.Is(err, ErrIntegrity) {
		t.Errorf("Prove with the wrong leaf: got %v, want ErrIntegrity", err)
	}

	_, latest, err := l.Checkpoint(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	first, _ := tlog.OpenCheckpoint(got[0].Checkpoint, vkey)
	proof, err := l.ConsistencyProof(t.Context(), first.Size, latest.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.VerifyConsistency(first, latest, proof); err != nil {
		t.Error(err)
	}
}

func TestReopenKeepsLogAndRefusesOtherKey(t *testing.T) {
	skey, _ := newKey(t)
	dir := t.TempDir()
	l, err := Open(t.Context(), Config{Dir: dir, SignerKey: skey})
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.Append(t.Context(), []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(t.Context(), []byte("two")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("append after close: got %v, want ErrUnavailable", err)
	}

	l = openLog(t, dir, skey)
	if idx, found, err := l.Find(t.Context(), []byte("one"), 0); err != nil || !found || idx != p.Index {
		t.Errorf("after reopen, Find = %d, %v, %v", idx, found, err)
	}
	if p2, err := l.Append(t.Context(), []byte("two")); err != nil || p2.Index != p.Index+1 {
		t.Errorf("after reopen, Append = %v, %v", p2, err)
	}
	l.Close(t.Context())

	other, _ := newKey(t)
	if _, err := Open(t.Context(), Config{Dir: dir, SignerKey: other}); !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), "not signed by the log's key") {
		t.Errorf("open with another key: got %v, want ErrIntegrity", err)
	}
}
