package translog

import (
	"bytes"
	"context"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/custody-dev/custody/libs/tlog"
)

// integrated returns a checkpoint of the log's integrated tree, signed with
// the log's key, or the served one when it already covers that tree.
//
// Tessera publishes its own checkpoint at most every CheckpointInterval,
// and after a skipped publication it sleeps a whole interval: an entry
// appended just after a publication waited ≈ 100 ms for a checkpoint to be
// proved against (decision 0017). The POSIX driver integrates an entry
// into the tiles before its index is returned, so the tree of the
// integrated size can be signed at once: its root is computed from the
// tiles with the same node cache the proofs use. The note is the one
// Tessera writes (the C2SP checkpoint body signed with the log's key), and
// the co-signer checks that it extends the last one it co-signed, as for
// Tessera's.
func (l *Log) integrated(ctx context.Context) ([]byte, *tlog.Checkpoint, error) {
	size, err := l.Size(ctx)
	if err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	signed, cur, anchor := l.cs.signed, l.cs.cp, l.anchor
	l.mu.Unlock()
	if cur != nil && cur.Size >= size {
		return signed, cur, nil
	}
	pb := newProofBuilder(size, l.reader.ReadTile)
	root, err := rootAt(ctx, pb, size)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: root of the tree of size %d: %v", ErrUnavailable, size, err)
	}
	cp := tlog.Checkpoint{Origin: l.origin, Size: size, Hash: root}
	// Sign only a tree that extends the last one this log signed or
	// verified: tiles changed on disk must not get the log's signature.
	if err := extends(ctx, pb, anchor, &cp); err != nil {
		return nil, nil, err
	}
	signed, err = tlog.SignCheckpointWith(cp, l.signer)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrIntegrity, err)
	}
	l.mu.Lock()
	if l.anchor == nil || l.anchor.Size < cp.Size {
		l.anchor = &cp
	}
	l.mu.Unlock()
	return signed, &cp, nil
}

// extends checks that cp's tree extends from's (nil: nothing to check),
// with a consistency proof built from the same tiles as cp's root.
func extends(ctx context.Context, pb *proofBuilder, from, cp *tlog.Checkpoint) error {
	switch {
	case from == nil || from.Size == 0:
		return nil
	case from.Size > cp.Size:
		return fmt.Errorf("%w: the log has %d entries, but a checkpoint of %d was signed: the log's data directory lost entries; restore it", ErrIntegrity, cp.Size, from.Size)
	case from.Size == cp.Size:
		if !bytes.Equal(from.Hash, cp.Hash) {
			return fmt.Errorf("%w: the log's tree of size %d differs from the checkpoint signed at that size: its tiles were changed", ErrIntegrity, cp.Size)
		}
		return nil
	}
	proof, err := pb.consistency(ctx, from.Size, cp.Size)
	if err != nil {
		return fmt.Errorf("%w: consistency proof %d → %d: %v", ErrUnavailable, from.Size, cp.Size, err)
	}
	if err := tlog.VerifyConsistency(from, cp, proof); err != nil {
		return fmt.Errorf("%w: the log's tree of size %d does not extend the checkpoint signed at size %d: its tiles were changed: %v", ErrIntegrity, cp.Size, from.Size, err)
	}
	return nil
}

// rootAt returns the root hash of the tree of size entries from pb's
// tiles: the hashes of the perfect subtrees that make up [0, size), merged.
func rootAt(ctx context.Context, pb *proofBuilder, size uint64) ([]byte, error) {
	if size == 0 {
		return rfc6962.DefaultHasher.EmptyRoot(), nil
	}
	ids := compact.RangeNodes(0, size, nil)
	hashes := make([][]byte, 0, len(ids))
	for _, id := range ids {
		h, err := pb.node(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("node %v: %v", id, err)
		}
		hashes = append(hashes, h)
	}
	rf := compact.RangeFactory{Hash: tlog.HashChildren}
	r, err := rf.NewRange(0, size, hashes)
	if err != nil {
		return nil, err
	}
	return r.GetRootHash(nil)
}
