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
	l, err := translog.Open(t.Context(), translog.Config{Dir: f.dir, SignerKey: f.skey, Cosigner: f.c,
		CosignWait: time.Second, CosignRetryMax: 20 * time.Millisecond})
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
