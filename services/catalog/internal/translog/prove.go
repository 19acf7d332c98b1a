package translog

import (
	"context"
	"fmt"

	"github.com/custody-dev/custody/libs/tlog"
)

// ProveMany returns the latest served checkpoint (co-signed, with a
// Cosigner) and an inclusion proof against it for each index, built from
// one set of tiles; a nil proof for an index at or beyond its size. If the
// tiles changed under a partial tile it retries once with a newer
// checkpoint.
func (l *Log) ProveMany(ctx context.Context, indices []uint64) ([]byte, [][][]byte, error) {
	if l.isClosing() {
		return nil, nil, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
	var lastErr error
	for range 2 {
		signed, err := l.latest(ctx)
		if err != nil {
			return nil, nil, err
		}
		cp, err := tlog.OpenCheckpoint(signed, l.verifier)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: served checkpoint: %v", ErrIntegrity, err)
		}
		proofs, err := l.proveAt(ctx, cp.Size, indices)
		if err == nil {
			return signed, proofs, nil
		}
		lastErr = err
	}
	return nil, nil, fmt.Errorf("%w: inclusion proofs: %v", ErrUnavailable, lastErr)
}

func (l *Log) proveAt(ctx context.Context, size uint64, indices []uint64) ([][][]byte, error) {
	proofs := make([][][]byte, len(indices))
	if size == 0 {
		return proofs, nil
	}
	pb := newProofBuilder(size, l.reader.ReadTile)
	for i, idx := range indices {
		if idx >= size {
			continue
		}
		p, err := pb.inclusion(ctx, idx)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", idx, err)
		}
		if p == nil {
			p = [][]byte{}
		}
		proofs[i] = p
	}
	return proofs, nil
}
