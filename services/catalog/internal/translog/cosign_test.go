package translog_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/translog"
	"github.com/custody-dev/custody/services/catalog/internal/translog/cosigntest"
)

type cosigned struct {
	log  *translog.Log
	c    *cosigntest.Cosigner
	skey string
	vkey string
	dir  string
}

func newCosigned(t *testing.T) *cosigned {
	t.Helper()
	skey, vkey, err := tlog.GenerateKey("custody.test/log")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cosigntest.New(vkey)
	if err != nil {
		t.Fatal(err)
	}
	f := &cosigned{c: c, skey: skey, vkey: vkey, dir: t.TempDir()}
	f.log = f.open(t)
	return f
}

func (f *cosigned) open(t *testing.T) *translog.Log {
	t.Helper()
	return f.openRefreshing(t, 0)
}

// openRefreshing opens the log with CosignRefresh refresh (0: the
// default).
func (f *cosigned) openRefreshing(t *testing.T, refresh time.Duration) *translog.Log {
	t.Helper()
	l, err := translog.Open(t.Context(), translog.Config{Dir: f.dir, SignerKey: f.skey, Cosigner: f.c,
		CosignWait: time.Second, CosignRetryMax: 20 * time.Millisecond, CosignRefresh: refresh})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

// verify checks that p verifies with both the log's and the co-signer's
// keys.
func (f *cosigned) verify(t *testing.T, leaf []byte, p *translog.Proved) {
	t.Helper()
	for _, key := range []string{f.vkey, f.c.VerifierKey()} {
		cp, err := tlog.OpenCosigned(p.Checkpoint, "custody.test/log", key)
		if err != nil {
			t.Fatalf("checkpoint does not verify with %s: %v", key, err)
		}
		if err := tlog.VerifyInclusion(leaf, p.Index, p.Proof, cp); err != nil {
			t.Fatalf("entry %d: %v", p.Index, err)
		}
	}
}

func TestServesCosignedCheckpoints(t *testing.T) {
	f := newCosigned(t)
	signed, cp, err := f.log.Checkpoint(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != 0 {
		t.Errorf("new log: size %d", cp.Size)
	}
	if _, err := tlog.OpenCosigned(signed, "custody.test/log", f.c.VerifierKey()); err != nil {
		t.Errorf("empty log's checkpoint is not co-signed: %v", err)
	}
	for i := range 5 {
		leaf := fmt.Appendf(nil, "entry %d", i)
		p, err := f.log.Append(t.Context(), leaf)
		if err != nil {
			t.Fatal(err)
		}
		f.verify(t, leaf, p)
		if q, err := f.log.Prove(t.Context(), p.Index, leaf); err != nil {
			t.Errorf("Prove(%d): %v", p.Index, err)
		} else {
			f.verify(t, leaf, q)
		}
	}
	// Concurrent appends share batches; each is proved against a
	// co-signed checkpoint.
	const n = 50
	proved := make([]*translog.Proved, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			p, err := f.log.Append(t.Context(), fmt.Appendf(nil, "concurrent %d", i))
			if err != nil {
				t.Errorf("append %d: %v", i, err)
			}
			proved[i] = p
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i, p := range proved {
		f.verify(t, fmt.Appendf(nil, "concurrent %d", i), p)
	}
	signed, cp, err = f.log.Checkpoint(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tlog.OpenCosigned(signed, "custody.test/log", f.c.VerifierKey()); err != nil || cp.Size != 5+n {
		t.Errorf("Checkpoint = size %d, %v; want co-signed size %d", cp.Size, err, 5+n)
	}
	if _, refused := f.c.Stats(); refused != 0 {
		t.Errorf("%d checkpoints refused", refused)
	}
}

func TestCosignerFailureIsUnavailableAndRecovers(t *testing.T) {
	tests := []struct {
		name  string
		fail  func(c *cosigntest.Cosigner, on bool)
		wants string
	}{
		{"down", (*cosigntest.Cosigner).SetDown, "co-signer down"},
		{"refusing", (*cosigntest.Cosigner).SetRefusing, "refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCosigned(t)
			if _, err := f.log.Append(t.Context(), []byte("before")); err != nil {
				t.Fatal(err)
			}
			tt.fail(f.c, true)
			_, err := f.log.Append(t.Context(), []byte("during"))
			if !errors.Is(err, translog.ErrNotCosigned) || !errors.Is(err, translog.ErrUnavailable) || !strings.Contains(err.Error(), tt.wants) {
				t.Fatalf("Append while the co-signer is %s: got %v, want ErrNotCosigned and ErrUnavailable saying %q", tt.name, err, tt.wants)
			}
			seq, ok := errors.AsType[*translog.Sequenced](err)
			if !ok {
				t.Fatalf("Append error %v carries no *Sequenced", err)
			}
			// The checkpoint served is still the last co-signed one.
			signed, cp, err := f.log.Checkpoint(t.Context())
			if err != nil || cp.Size != 1 {
				t.Errorf("Checkpoint while failing = size %v, %v; want the last co-signed (1)", cp, err)
			} else if _, err := tlog.OpenCosigned(signed, "custody.test/log", f.c.VerifierKey()); err != nil {
				t.Error(err)
			}

			tt.fail(f.c, false)
			p, err := f.log.Prove(t.Context(), seq.Index, []byte("during"))
			if err != nil {
				t.Fatalf("Prove after the co-signer is back: %v", err)
			}
			f.verify(t, []byte("during"), p)
			p, err = f.log.Append(t.Context(), []byte("after"))
			if err != nil {
				t.Fatalf("Append after the co-signer is back: %v", err)
			}
			f.verify(t, []byte("after"), p)
		})
	}
}

func TestReopenContinuesFromCosignersState(t *testing.T) {
	f := newCosigned(t)
	for i := range 3 {
		if _, err := f.log.Append(t.Context(), fmt.Appendf(nil, "a%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.log.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.log = f.open(t)
	// The co-signer, which kept its state, is asked where to prove from.
	p, err := f.log.Append(t.Context(), []byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	f.verify(t, []byte("b"), p)
	if p.Index != 3 {
		t.Errorf("index %d, want 3", p.Index)
	}
	if _, refused := f.c.Stats(); refused != 0 {
		t.Errorf("%d checkpoints refused after reopening", refused)
	}
}

func TestCosignerAheadOfLogIsRefusedHere(t *testing.T) {
	f := newCosigned(t)
	for i := range 3 {
		if _, err := f.log.Append(t.Context(), fmt.Appendf(nil, "a%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	f.log.Close(t.Context())
	// The data directory is lost; a new, empty log with the same key and
	// the same co-signer must not serve checkpoints.
	f.dir = t.TempDir()
	f.log = f.open(t)
	_, _, err := f.log.Checkpoint(t.Context())
	if !errors.Is(err, translog.ErrNotCosigned) || !strings.Contains(err.Error(), "lost entries") {
		t.Errorf("Checkpoint of a log behind its co-signer: got %v, want ErrNotCosigned saying it lost entries", err)
	}
}

// TestIdleLogIsCosignedAgain: with no entry waiting, the served checkpoint
// of an unchanged tree is co-signed again every CosignRefresh, so its
// cosignature/v1 timestamp advances (ATTACKS.md #14); with the co-signer
// down it stops advancing, and it advances again once the co-signer is
// back. Without the refresh timer the timestamp stays at the last append.
func TestIdleLogIsCosignedAgain(t *testing.T) {
	skey, vkey, err := tlog.GenerateKey("custody.test/log")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cosigntest.New(vkey)
	if err != nil {
		t.Fatal(err)
	}
	f := &cosigned{c: c, skey: skey, vkey: vkey, dir: t.TempDir()}
	const refresh = 300 * time.Millisecond
	f.log = f.openRefreshing(t, refresh)
	for i := range 3 {
		if _, err := f.log.Append(t.Context(), fmt.Appendf(nil, "entry %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	served := func() *tlog.Checkpoint {
		t.Helper()
		signed, _, err := f.log.Checkpoint(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		cp, err := tlog.OpenCosigned(signed, "custody.test/log", c.VerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		return cp
	}
	// advanced waits for a served checkpoint co-signed after t0 (the
	// timestamp has whole seconds).
	advanced := func(t0 time.Time, within time.Duration) *tlog.Checkpoint {
		t.Helper()
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			if cp := served(); cp.CosignedAt.After(t0) {
				return cp
			}
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	}
	first := served()
	if first.Size != 3 {
		t.Fatalf("served size %d, want 3", first.Size)
	}
	calls0, _ := c.Stats()
	later := advanced(first.CosignedAt, 3*time.Second)
	if later == nil {
		t.Fatalf("idle log: cosignature still at %s after 3s with a refresh of %s", first.CosignedAt, refresh)
	}
	if later.Size != first.Size || string(later.Hash) != string(first.Hash) {
		t.Errorf("refreshed checkpoint is of another tree: %d %x, want %d %x", later.Size, later.Hash, first.Size, first.Hash)
	}
	// Bounded: about one co-signature per refresh, not a busy loop.
	calls1, refused := c.Stats()
	if refused != 0 {
		t.Errorf("the co-signer refused %d refreshes", refused)
	}
	if max := int(time.Since(first.CosignedAt)/refresh) + 3; calls1-calls0 > max {
		t.Errorf("%d co-signatures in %s with a refresh of %s; want at most %d", calls1-calls0, time.Since(first.CosignedAt).Round(time.Millisecond), refresh, max)
	}

	c.SetDown(true)
	time.Sleep(2 * refresh) // let a refresh in flight land
	frozen := served()
	if cp := advanced(frozen.CosignedAt, 2*time.Second); cp != nil {
		t.Fatalf("co-signer down, yet the cosignature advanced to %s", cp.CosignedAt)
	}
	c.SetDown(false)
	if advanced(frozen.CosignedAt, 3*time.Second) == nil {
		t.Fatal("co-signer back, but the cosignature did not advance within 3s")
	}
	// Entries are still served after refreshes.
	p, err := f.log.Append(t.Context(), []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	f.verify(t, []byte("after"), p)
}

// TestNoRefreshWhenNegative: CosignRefresh < 0 leaves an idle log's
// checkpoint as it is (the co-signer is not called).
func TestNoRefreshWhenNegative(t *testing.T) {
	skey, vkey, err := tlog.GenerateKey("custody.test/log")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cosigntest.New(vkey)
	if err != nil {
		t.Fatal(err)
	}
	f := &cosigned{c: c, skey: skey, vkey: vkey, dir: t.TempDir()}
	f.log = f.openRefreshing(t, -1)
	if _, err := f.log.Append(t.Context(), []byte("one")); err != nil {
		t.Fatal(err)
	}
	before, _ := c.Stats()
	time.Sleep(time.Second)
	if after, _ := c.Stats(); after != before {
		t.Errorf("refresh off: %d co-signatures while idle", after-before)
	}
}
