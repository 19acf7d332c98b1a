package translog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/transparency-dev/tessera/client"
)

// TestProofBuilderMatchesTessera checks the catalog's proof builder
// against Tessera's own, on a real POSIX log, for every entry of trees
// that end inside and on tile boundaries.
func TestProofBuilderMatchesTessera(t *testing.T) {
	skey, _ := newKey(t)
	l := openLog(t, t.TempDir(), skey)
	const n = 700
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if _, err := l.Sequence(t.Context(), fmt.Appendf(nil, "leaf %d", i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, err := l.Prove(t.Context(), n-1, nil); err == nil {
		t.Fatal("Prove with the wrong leaf bytes succeeded")
	}
	_, cp, err := l.Checkpoint(t.Context())
	if err != nil || cp.Size != n {
		t.Fatalf("checkpoint size %v, %v; want %d", cp, err, n)
	}
	// Full tiles exist at any size at or beyond them; the partial tile of
	// the checkpoint's size exists.
	for _, size := range []uint64{1, 256, 512, n} {
		ours := newProofBuilder(size, l.reader.ReadTile)
		theirs, err := client.NewProofBuilder(t.Context(), size, l.reader.ReadTile)
		if err != nil {
			t.Fatal(err)
		}
		for i := range size {
			want, err := theirs.InclusionProof(t.Context(), i)
			if err != nil {
				t.Fatalf("size %d: Tessera's inclusion proof of %d: %v", size, i, err)
			}
			got, err := ours.inclusion(t.Context(), i)
			if err != nil {
				t.Fatalf("size %d: inclusion proof of %d: %v", size, i, err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("size %d: inclusion proof of %d differs from Tessera's (-want +got):\n%s", size, i, diff)
			}
		}
		for _, older := range []uint64{1, 3, 255, 256, 300, 511} {
			if older > size {
				continue
			}
			want, err := theirs.ConsistencyProof(t.Context(), older, size)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ours.consistency(t.Context(), older, size)
			if err != nil {
				t.Fatalf("consistency %d → %d: %v", older, size, err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("consistency %d → %d differs from Tessera's (-want +got):\n%s", older, size, diff)
			}
		}
	}
	ours := newProofBuilder(n, l.reader.ReadTile)
	if _, err := ours.inclusion(t.Context(), n); err == nil {
		t.Error("inclusion proof of an entry beyond the tree: want an error")
	}
	if _, err := ours.consistency(t.Context(), 1, n+1); err == nil {
		t.Error("consistency proof beyond the tree: want an error")
	}
}

// FuzzProofBuilderTile feeds arbitrary bytes as every tile: the builder
// must fail or return a proof, never panic or index out of range.
func FuzzProofBuilderTile(f *testing.F) {
	f.Add([]byte{}, uint64(0), uint64(1))
	f.Add(make([]byte, 32*5), uint64(3), uint64(5))
	f.Add(make([]byte, 32*256), uint64(300), uint64(70000))
	f.Add(make([]byte, 31), uint64(0), uint64(2))
	f.Fuzz(func(t *testing.T, tile []byte, index, size uint64) {
		fetch := func(context.Context, uint64, uint64, uint8) ([]byte, error) { return tile, nil }
		b := newProofBuilder(size, fetch)
		_, _ = b.inclusion(context.Background(), index)
		_, _ = b.consistency(context.Background(), index, size)
		failing := newProofBuilder(size, func(context.Context, uint64, uint64, uint8) ([]byte, error) {
			return nil, errors.New("down")
		})
		if p, err := failing.inclusion(context.Background(), index); err == nil && size > 1 && index < size {
			t.Errorf("proof %x with every tile read failing", p)
		}
	})
}
