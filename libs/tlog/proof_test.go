package tlog_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"

	"github.com/custody-dev/custody/libs/tlog"
)

// testTree is a reference RFC 6962 tree of n leaves "leaf-<i>".
func testTree(n int) (*testonly.Tree, [][]byte) {
	tree := testonly.New(rfc6962.DefaultHasher)
	var leaves [][]byte
	for i := range n {
		leaf := fmt.Appendf(nil, "leaf-%d", i)
		leaves = append(leaves, leaf)
		tree.AppendData(leaf)
	}
	return tree, leaves
}

func checkpointAt(tree *testonly.Tree, size uint64) *tlog.Checkpoint {
	return &tlog.Checkpoint{Origin: origin, Size: size, Hash: tree.HashAt(size)}
}

func TestVerifyInclusionEveryLeaf(t *testing.T) {
	tree, leaves := testTree(37)
	for size := uint64(1); size <= tree.Size(); size++ {
		cp := checkpointAt(tree, size)
		for i := range size {
			p, err := tree.InclusionProof(i, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := tlog.VerifyInclusion(leaves[i], i, p, cp); err != nil {
				t.Fatalf("leaf %d at size %d: %v", i, size, err)
			}
		}
	}
}

func TestVerifyInclusionRejects(t *testing.T) {
	tree, leaves := testTree(10)
	cp := checkpointAt(tree, 10)
	p, err := tree.InclusionProof(3, 10)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([][]byte{}, p...)
	flipped[0] = bytes.Clone(p[0])
	flipped[0][0] ^= 1
	tests := []struct {
		name  string
		leaf  []byte
		index uint64
		proof [][]byte
		cp    *tlog.Checkpoint
		want  error
	}{
		{"other leaf", leaves[4], 3, p, cp, tlog.ErrProofMismatch},
		{"other index", leaves[3], 2, p, cp, tlog.ErrProofMismatch},
		{"flipped bit", leaves[3], 3, flipped, cp, tlog.ErrProofMismatch},
		{"other root", leaves[3], 3, p, &tlog.Checkpoint{Origin: origin, Size: 10, Hash: make([]byte, 32)}, tlog.ErrProofMismatch},
		{"short proof", leaves[3], 3, p[1:], cp, tlog.ErrMalformedProof},
		{"long proof", leaves[3], 3, append(p, make([]byte, 32)), cp, tlog.ErrMalformedProof},
		{"short hash", leaves[3], 3, [][]byte{p[0][:31], p[1], p[2], p[3]}, cp, tlog.ErrMalformedProof},
		{"index beyond size", leaves[3], 10, p, cp, tlog.ErrMalformedProof},
		{"no checkpoint", leaves[3], 3, p, nil, tlog.ErrMalformedProof},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tlog.VerifyInclusion(tt.leaf, tt.index, tt.proof, tt.cp); !errors.Is(err, tt.want) {
				t.Errorf("VerifyInclusion: got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyConsistency(t *testing.T) {
	tree, _ := testTree(20)
	for size1 := uint64(0); size1 <= 20; size1++ {
		for size2 := size1; size2 <= 20; size2++ {
			p, err := tree.ConsistencyProof(size1, size2)
			if err != nil {
				t.Fatal(err)
			}
			if err := tlog.VerifyConsistency(checkpointAt(tree, size1), checkpointAt(tree, size2), p); err != nil {
				t.Fatalf("%d → %d: %v", size1, size2, err)
			}
		}
	}
}

func TestVerifyConsistencyRejects(t *testing.T) {
	tree, _ := testTree(20)
	fork, _ := testTree(20)
	fork.AppendData([]byte("extra"))
	p, err := tree.ConsistencyProof(5, 13)
	if err != nil {
		t.Fatal(err)
	}
	forked := *checkpointAt(tree, 13)
	forked.Hash = fork.HashAt(21)
	otherOrigin := *checkpointAt(tree, 13)
	otherOrigin.Origin = "other"
	tests := []struct {
		name         string
		older, newer *tlog.Checkpoint
		proof        [][]byte
		want         error
	}{
		{"forked newer", checkpointAt(tree, 5), &forked, p, tlog.ErrProofMismatch},
		{"rolled back", checkpointAt(tree, 13), checkpointAt(tree, 5), p, tlog.ErrProofMismatch},
		{"same size, other root", checkpointAt(tree, 5), &tlog.Checkpoint{Origin: origin, Size: 5, Hash: make([]byte, 32)}, nil, tlog.ErrProofMismatch},
		{"same size, proof given", checkpointAt(tree, 5), checkpointAt(tree, 5), p, tlog.ErrMalformedProof},
		{"short proof", checkpointAt(tree, 5), checkpointAt(tree, 13), p[1:], tlog.ErrMalformedProof},
		{"bad hash size", checkpointAt(tree, 5), checkpointAt(tree, 13), [][]byte{{1}}, tlog.ErrMalformedProof},
		{"origin", checkpointAt(tree, 5), &otherOrigin, p, tlog.ErrOriginMismatch},
		{"missing", nil, checkpointAt(tree, 5), nil, tlog.ErrMalformedProof},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tlog.VerifyConsistency(tt.older, tt.newer, tt.proof); !errors.Is(err, tt.want) {
				t.Errorf("VerifyConsistency: got %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzVerifyInclusion(f *testing.F) {
	tree, leaves := testTree(11)
	p, err := tree.InclusionProof(6, 11)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(leaves[6], uint64(6), uint64(11), bytes.Join(p, nil), uint8(32))
	f.Add([]byte("x"), uint64(0), uint64(1), []byte{}, uint8(32))
	f.Add([]byte("x"), ^uint64(0), ^uint64(0), bytes.Repeat([]byte{7}, 64*32), uint8(32))
	f.Fuzz(func(t *testing.T, leaf []byte, index, size uint64, flat []byte, width uint8) {
		// Split flat into hashes of width bytes (0: one hash per byte).
		var proof [][]byte
		w := max(int(width), 1)
		for len(flat) > 0 && len(proof) < 1000 {
			n := min(w, len(flat))
			proof = append(proof, flat[:n])
			flat = flat[n:]
		}
		var root []byte
		if size > 0 && size <= tree.Size() {
			root = tree.HashAt(size)
		} else {
			root = bytes.Repeat([]byte{9}, 32)
		}
		cp := &tlog.Checkpoint{Origin: origin, Size: size, Hash: root}
		err := tlog.VerifyInclusion(leaf, index, proof, cp)
		if err == nil {
			// Accepting is only right for the real leaf at that index.
			if size > tree.Size() || index >= size || !bytes.Equal(leaf, leaves[index]) {
				t.Fatalf("accepted leaf %q at %d of %d", leaf, index, size)
			}
			return
		}
		if !errors.Is(err, tlog.ErrMalformedProof) && !errors.Is(err, tlog.ErrProofMismatch) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		older := &tlog.Checkpoint{Origin: origin, Size: index, Hash: bytes.Repeat([]byte{3}, 32)}
		if err := tlog.VerifyConsistency(older, cp, proof); err == nil && index != size && index != 0 {
			t.Fatalf("accepted forged consistency %d → %d", index, size)
		}
	})
}

// TestHasherIsRFC6962: rfc6962.DefaultHasher hashes leaves and nodes as
// rfc6962.DefaultHasher does, also for nodes that are not 32-byte hashes.
func TestHasherIsRFC6962(t *testing.T) {
	h32 := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	for _, c := range []struct{ l, r []byte }{{h32(1), h32(2)}, {h32(0), h32(0xff)}, {nil, nil}, {[]byte("short"), h32(3)}, {h32(4), make([]byte, 33)}} {
		if got, want := tlog.Hasher.HashChildren(c.l, c.r), rfc6962.DefaultHasher.HashChildren(c.l, c.r); !bytes.Equal(got, want) {
			t.Errorf("HashChildren(%x, %x) = %x, want %x", c.l, c.r, got, want)
		}
	}
	for _, leaf := range [][]byte{nil, {}, []byte("leaf"), bytes.Repeat([]byte("x"), 1000)} {
		if got, want := tlog.Hasher.HashLeaf(leaf), rfc6962.DefaultHasher.HashLeaf(leaf); !bytes.Equal(got, want) {
			t.Errorf("HashLeaf(%q) = %x, want %x", leaf, got, want)
		}
	}
	if !bytes.Equal(rfc6962.DefaultHasher.EmptyRoot(), rfc6962.DefaultHasher.EmptyRoot()) || tlog.Hasher.Size() != rfc6962.DefaultHasher.Size() {
		t.Error("EmptyRoot or Size differ from rfc6962")
	}
}

// BenchmarkVerifyInclusion verifies a proof in a tree of a million entries.
func BenchmarkVerifyInclusion(b *testing.B) {
	const size = 1 << 20
	proofHashes := make([][]byte, 20)
	for i := range proofHashes {
		proofHashes[i] = bytes.Repeat([]byte{byte(i)}, 32)
	}
	leaf := []byte("leaf")
	// The root this proof leads to, computed with rfc6962.
	root := rfc6962.DefaultHasher.HashLeaf(leaf)
	for _, p := range proofHashes {
		root = rfc6962.DefaultHasher.HashChildren(p, root)
	}
	cp := &tlog.Checkpoint{Origin: "o", Size: size, Hash: root}
	b.ReportAllocs()
	for b.Loop() {
		if err := tlog.VerifyInclusion(leaf, size-1, proofHashes, cp); err != nil {
			b.Fatal(err)
		}
	}
}
