package translog

import (
	"context"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"

	"github.com/custody-dev/custody/libs/tlog"
)

// proofBuilder builds RFC 6962 proofs against the tree of one size from
// the log's tiles, like Tessera's client.ProofBuilder, but computes every
// node of a tile once: Tessera's rehashes up to 128 leaves of a tile for
// each node a proof needs, which made proving a batch of 4,096 events the
// catalog's largest CPU cost. Each proof it returns is still verified
// against the checkpoint by the caller. Not safe for concurrent use; build
// one per batch.
type proofBuilder struct {
	size    uint64
	getTile client.TileFetcherFunc
	// tiles holds, per tile, the hashes of its complete subtrees by level
	// within the tile: levels[0] are the tile's nodes as stored.
	tiles map[[2]uint64][][][]byte
}

func newProofBuilder(size uint64, f client.TileFetcherFunc) *proofBuilder {
	return &proofBuilder{size: size, getTile: f, tiles: map[[2]uint64][][][]byte{}}
}

// inclusion returns the inclusion proof of entry index in the tree.
func (b *proofBuilder) inclusion(ctx context.Context, index uint64) ([][]byte, error) {
	nodes, err := proof.Inclusion(index, b.size)
	if err != nil {
		return nil, fmt.Errorf("inclusion proof node list: %v", err)
	}
	return b.fetch(ctx, nodes)
}

// consistency returns the proof that the tree of size smaller is a prefix
// of the tree of size larger (at most the builder's size).
func (b *proofBuilder) consistency(ctx context.Context, smaller, larger uint64) ([][]byte, error) {
	if larger > b.size {
		return nil, fmt.Errorf("consistency proof to %d beyond tree size %d", larger, b.size)
	}
	nodes, err := proof.Consistency(smaller, larger)
	if err != nil {
		return nil, fmt.Errorf("consistency proof node list: %v", err)
	}
	return b.fetch(ctx, nodes)
}

func (b *proofBuilder) fetch(ctx context.Context, nodes proof.Nodes) ([][]byte, error) {
	hashes := make([][]byte, 0, len(nodes.IDs))
	for _, id := range nodes.IDs {
		h, err := b.node(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("node %v: %v", id, err)
		}
		hashes = append(hashes, h)
	}
	hashes, err := nodes.Rehash(hashes, tlog.HashChildren)
	if err != nil {
		return nil, fmt.Errorf("rehash proof: %v", err)
	}
	return hashes, nil
}

// node returns the hash of a complete subtree of the tree.
func (b *proofBuilder) node(ctx context.Context, id compact.NodeID) ([]byte, error) {
	tileLevel, tileIndex, nodeLevel, nodeIndex := layout.NodeCoordsToTileAddress(uint64(id.Level), id.Index)
	key := [2]uint64{tileLevel, tileIndex}
	levels, ok := b.tiles[key]
	if !ok {
		raw, err := b.getTile(ctx, tileLevel, tileIndex, layout.PartialTileSize(tileLevel, tileIndex, b.size))
		if err != nil {
			return nil, fmt.Errorf("read tile %d/%d: %v", tileLevel, tileIndex, err)
		}
		var t api.HashTile
		if err := t.UnmarshalText(raw); err != nil {
			return nil, fmt.Errorf("parse tile %d/%d: %v", tileLevel, tileIndex, err)
		}
		levels = [][][]byte{t.Nodes}
		for below := t.Nodes; len(below) > 1; {
			up := make([][]byte, len(below)/2)
			for i := range up {
				up[i] = tlog.HashChildren(below[2*i], below[2*i+1])
			}
			levels = append(levels, up)
			below = up
		}
		b.tiles[key] = levels
	}
	if int(nodeLevel) >= len(levels) || nodeIndex >= uint64(len(levels[nodeLevel])) {
		return nil, fmt.Errorf("tile %d/%d has no complete node %d at level %d", tileLevel, tileIndex, nodeIndex, nodeLevel)
	}
	return levels[nodeLevel][nodeIndex], nil
}
