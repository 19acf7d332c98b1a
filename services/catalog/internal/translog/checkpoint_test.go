package translog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/custody-dev/custody/libs/tlog"
)

// TestProvedAgainstCheckpointsOfTheIntegratedTree: appends are proved
// against checkpoints the catalog signs from the integrated tree, without
// waiting for Tessera to publish its own; each root is the RFC 6962 root of
// the leaves at their indices, and Tessera's checkpoint, once published,
// commits to the same tree.
func TestProvedAgainstCheckpointsOfTheIntegratedTree(t *testing.T) {
	skey, vkey := newKey(t)
	const interval = 5 * time.Second
	start := time.Now()
	l, err := Open(t.Context(), Config{Dir: t.TempDir(), SignerKey: skey, CheckpointInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })

	const n = 600
	leaves := make([][]byte, n)
	served := map[uint64][]byte{} // size → root of every checkpoint an Append returned
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			leaf := fmt.Appendf(nil, "leaf %d", i)
			p, err := l.Append(t.Context(), leaf)
			if err != nil {
				errs <- err
				return
			}
			cp, err := tlog.OpenCheckpoint(p.Checkpoint, vkey)
			if err != nil {
				errs <- err
				return
			}
			if err := tlog.VerifyInclusion(leaf, p.Index, p.Proof, cp); err != nil {
				errs <- err
				return
			}
			mu.Lock()
			leaves[p.Index] = leaf
			served[cp.Size] = cp.Hash
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, pub, err := l.published(t.Context()); err != nil {
		t.Fatal(err)
	} else if time.Since(start) < interval-time.Second && pub.Size != 0 {
		t.Fatalf("Tessera published a checkpoint of %d entries within %s of a %s interval: the test shows nothing", pub.Size, time.Since(start), interval)
	} else {
		t.Logf("%d entries proved in %s; Tessera's published checkpoint has %d", n, time.Since(start), pub.Size)
	}

	// Every checkpoint served has the RFC 6962 root of the leaves at their
	// indices, and so has the tree's root computed now.
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	want := rf.NewEmptyRange(0)
	roots := map[uint64][]byte{}
	for i, leaf := range leaves {
		if err := want.Append(rfc6962.DefaultHasher.HashLeaf(leaf), nil); err != nil {
			t.Fatal(err)
		}
		roots[uint64(i+1)], _ = want.GetRootHash(nil)
	}
	for size, root := range served {
		if !bytes.Equal(root, roots[size]) {
			t.Errorf("checkpoint of %d entries has root %x, want %x", size, root, roots[size])
		}
	}
	t.Logf("%d distinct checkpoints served", len(served))
	if got, err := rootAt(t.Context(), newProofBuilder(n, l.reader.ReadTile), n); err != nil || !bytes.Equal(got, roots[n]) {
		t.Errorf("root at %d = %x, %v; want %x", n, got, err, roots[n])
	}
	if got, _ := rootAt(t.Context(), newProofBuilder(0, l.reader.ReadTile), 0); !bytes.Equal(got, rfc6962.DefaultHasher.EmptyRoot()) {
		t.Errorf("root of the empty tree = %x", got)
	}

	// Tessera's own checkpoint, when it comes, is of the same tree.
	deadline := time.Now().Add(3 * interval)
	for {
		_, pub, err := l.published(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if pub.Size == n {
			if !bytes.Equal(pub.Hash, roots[n]) {
				t.Fatalf("Tessera's checkpoint of %d entries has root %x, the catalog's %x", n, pub.Hash, roots[n])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Tessera published no checkpoint of %d entries within %s (size %d)", n, 3*interval, pub.Size)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestChangedTilesAreNeverSigned: the catalog signs checkpoints from the
// tiles, so tiles changed on disk must not get the log's signature: the
// next checkpoint must extend the last one signed, or none is signed and
// the served one stays.
func TestChangedTilesAreNeverSigned(t *testing.T) {
	skey, _ := newKey(t)
	dir := t.TempDir()
	l, err := Open(t.Context(), Config{Dir: dir, SignerKey: skey, CheckpointInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	const n = 300 // a full tile of entries and a partial one
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := l.Sequence(t.Context(), fmt.Appendf(nil, "leaf %d", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	_, before, err := l.Checkpoint(t.Context())
	if err != nil || before.Size != n {
		t.Fatalf("checkpoint before = %v, %v; want %d entries", before, err, n)
	}

	// Flip a byte of every tile that exists now.
	var changed int
	if err := filepath.WalkDir(filepath.Join(dir, "tile"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			return err
		}
		b[len(b)/2] ^= 1
		changed++
		return os.WriteFile(p, b, 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	if changed == 0 {
		t.Fatal("no tiles found to change: the test shows nothing")
	}
	if _, err := l.Sequence(t.Context(), []byte("one more")); err != nil {
		t.Fatal(err)
	}
	if size, err := l.Size(t.Context()); err != nil || size != n+1 {
		t.Fatalf("size after the append = %d, %v; want %d", size, err, n+1)
	}
	if _, cp, err := l.Checkpoint(t.Context()); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("checkpoint over changed tiles = %v, %v; want ErrIntegrity", cp, err)
	} else {
		t.Log(err)
	}
	if cur := l.latestCosigned(); cur == nil || !sameTree(cur, before) {
		t.Fatalf("served checkpoint = %v; want the one before the change, %v", cur, before)
	}
}
