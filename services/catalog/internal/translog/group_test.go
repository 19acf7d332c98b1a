package translog

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

// Entries that arrive while a batch is being written share the next one:
// 256 concurrent appends take a handful of batches, not one each, and every
// entry gets its own index.
func TestConcurrentEntriesShareBatches(t *testing.T) {
	skey, _ := newKey(t)
	l := openLog(t, t.TempDir(), skey)
	const n = 256
	idx := make([]uint64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			idx[i], errs[i] = l.Sequence(t.Context(), fmt.Appendf(nil, "entry %d", i))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	slices.Sort(idx)
	for i, got := range idx {
		if got != uint64(i) {
			t.Fatalf("indices %v, want 0..%d once each", idx, n-1)
		}
	}
	if b := l.group.batches.Load(); b > n/8 {
		t.Errorf("%d entries took %d batches, want at most %d", n, b, n/8)
	} else {
		t.Logf("%d entries in %d batches", n, b)
	}
	// A lone entry after that is sequenced in a batch of its own.
	before := l.group.batches.Load()
	if i, err := l.Sequence(t.Context(), []byte("alone")); err != nil || i != n {
		t.Fatalf("lone entry: index %d, %v; want %d", i, err, n)
	}
	if got := l.group.batches.Load() - before; got != 1 {
		t.Errorf("lone entry took %d batches", got)
	}
}

// An entry handed over after the log closed fails as not sequenced.
func TestSequenceAfterClose(t *testing.T) {
	skey, _ := newKey(t)
	l := openLog(t, t.TempDir(), skey)
	if err := l.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Sequence(t.Context(), []byte("late")); err == nil {
		t.Fatal("Sequence after Close succeeded")
	}
}

// Appenders that each wait for their entry before sending the next (as
// gRPC callers do) still fill batches.
func TestClosedLoopAppendersFillBatches(t *testing.T) {
	skey, _ := newKey(t)
	l := openLog(t, t.TempDir(), skey)
	const appenders, each = 64, 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	for a := range appenders {
		wg.Go(func() {
			for i := range each {
				if _, err := l.Sequence(t.Context(), fmt.Appendf(nil, "entry %d/%d", a, i)); err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if failed != nil {
		t.Fatal(failed)
	}
	b := l.group.batches.Load()
	t.Logf("%d entries in %d batches (%.1f a batch)", appenders*each, b, float64(appenders*each)/float64(b))
	// Without the join window they split into two alternating batches of
	// about half each.
	if avg := float64(appenders*each) / float64(b); avg < appenders/2+8 {
		t.Errorf("%.1f entries a batch from %d closed-loop appenders, want at least %d", avg, appenders, appenders/2+8)
	}
}
