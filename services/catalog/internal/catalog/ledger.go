package catalog

import (
	"bytes"
	"context"
	"fmt"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/translog"
)

// Page sizes of Ledger.Entries.
const (
	DefaultEntriesPage = 256
	MaxEntriesPage     = 1000
)

// LedgerLog is what Ledger reads from the log: *translog.Log.
type LedgerLog interface {
	// Checkpoint returns the latest served (co-signed) checkpoint.
	Checkpoint(ctx context.Context) ([]byte, *tlog.Checkpoint, error)
	Entries(ctx context.Context, start, n, size uint64) ([][]byte, error)
	InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error)
	ConsistencyProof(ctx context.Context, older, newer uint64) ([][]byte, error)
}

var _ LedgerLog = (*translog.Log)(nil)

// Ledger answers reads of the log by anyone who may read it: entries and
// proofs, always within the latest co-signed checkpoint, which every
// answer carries so that the caller verifies what it gets. Indexes and
// sizes outside that tree, and pages larger than MaxEntriesPage, are
// refused with ErrInvalid before the log is read. Methods are safe for
// concurrent use.
type Ledger struct {
	log LedgerLog
}

// NewLedger returns a Ledger over l.
func NewLedger(l LedgerLog) *Ledger { return &Ledger{log: l} }

// Entries returns up to pageSize entries from start (0 means
// DefaultEntriesPage) and the checkpoint they are in.
func (g *Ledger) Entries(ctx context.Context, start uint64, pageSize int) ([][]byte, []byte, error) {
	if pageSize < 0 || pageSize > MaxEntriesPage {
		return nil, nil, fmt.Errorf("%w: page size %d: want 0 (default %d) to %d", ErrInvalid, pageSize, DefaultEntriesPage, MaxEntriesPage)
	}
	if pageSize == 0 {
		pageSize = DefaultEntriesPage
	}
	signed, cp, err := g.checkpoint(ctx)
	if err != nil {
		return nil, nil, err
	}
	if start >= cp.Size {
		return nil, nil, fmt.Errorf("%w: start %d: the co-signed tree has %d entries", ErrInvalid, start, cp.Size)
	}
	n := min(uint64(pageSize), cp.Size-start)
	entries, err := g.log.Entries(ctx, start, n, cp.Size)
	if err != nil {
		return nil, nil, logError(fmt.Sprintf("read entries %d+%d", start, n), err)
	}
	return entries, signed, nil
}

// InclusionProof returns entry index, its inclusion proof in the tree of
// treeSize entries (0 means the co-signed checkpoint's), that size, and the
// co-signed checkpoint. A proof against the checkpoint is verified before
// it is returned.
func (g *Ledger) InclusionProof(ctx context.Context, index, treeSize uint64) (leaf []byte, size uint64, proof [][]byte, checkpoint []byte, err error) {
	signed, cp, err := g.checkpoint(ctx)
	if err != nil {
		return nil, 0, nil, nil, err
	}
	size = treeSize
	if size == 0 {
		size = cp.Size
	}
	if size > cp.Size {
		return nil, 0, nil, nil, fmt.Errorf("%w: tree size %d: the co-signed tree has %d entries", ErrInvalid, size, cp.Size)
	}
	if index >= size {
		return nil, 0, nil, nil, fmt.Errorf("%w: index %d is not below tree size %d", ErrInvalid, index, size)
	}
	leaves, err := g.log.Entries(ctx, index, 1, cp.Size)
	if err != nil {
		return nil, 0, nil, nil, logError(fmt.Sprintf("read entry %d", index), err)
	}
	proof, err = g.log.InclusionProof(ctx, index, size)
	if err != nil {
		return nil, 0, nil, nil, logError(fmt.Sprintf("inclusion proof for entry %d", index), err)
	}
	if size == cp.Size {
		if err := tlog.VerifyInclusion(leaves[0], index, proof, cp); err != nil {
			return nil, 0, nil, nil, fmt.Errorf("%w: entry %d: %w", ErrIntegrity, index, err)
		}
	}
	return leaves[0], size, proof, signed, nil
}

// ConsistencyProof returns a proof that the tree of second entries (0 means
// the co-signed checkpoint's) extends the tree of first entries, that
// second size, and the co-signed checkpoint. The proof is empty when first
// is 0 or equals second.
func (g *Ledger) ConsistencyProof(ctx context.Context, first, second uint64) (size uint64, proof [][]byte, checkpoint []byte, err error) {
	signed, cp, err := g.checkpoint(ctx)
	if err != nil {
		return 0, nil, nil, err
	}
	size = second
	if size == 0 {
		size = cp.Size
	}
	if size > cp.Size {
		return 0, nil, nil, fmt.Errorf("%w: second size %d: the co-signed tree has %d entries", ErrInvalid, size, cp.Size)
	}
	if first > size {
		return 0, nil, nil, fmt.Errorf("%w: first size %d is larger than second size %d", ErrInvalid, first, size)
	}
	if first == 0 || first == size {
		return size, [][]byte{}, signed, nil
	}
	proof, err = g.log.ConsistencyProof(ctx, first, size)
	if err != nil {
		return 0, nil, nil, logError(fmt.Sprintf("consistency proof %d → %d", first, size), err)
	}
	return size, proof, signed, nil
}

func (g *Ledger) checkpoint(ctx context.Context) ([]byte, *tlog.Checkpoint, error) {
	signed, cp, err := g.log.Checkpoint(ctx)
	if err != nil {
		return nil, nil, logError("read checkpoint", err)
	}
	return bytes.Clone(signed), cp, nil
}
