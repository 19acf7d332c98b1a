package sqlquery

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// JoinProof encodes an inclusion proof as the SQL back ends store it: its
// 32-byte hashes concatenated.
func JoinProof(proof [][]byte) ([]byte, error) {
	flat := make([]byte, 0, len(proof)*sha256.Size)
	for _, h := range proof {
		if len(h) != sha256.Size {
			return nil, fmt.Errorf("proof hash of %d bytes", len(h))
		}
		flat = append(flat, h...)
	}
	return flat, nil
}

// FillEntry sets e's log position and proof from stored columns: search_from,
// log_index (nil while the log has not assigned one) and the proof as
// JoinProof encodes it. e.Checkpoint must already be set: a logged entry
// with an empty proof gets a non-nil empty one.
func FillEntry(e *catalog.Entry, from int64, index *int64, proofFlat []byte) error {
	if from < 0 || index != nil && *index < 0 {
		return errors.New("negative log position")
	}
	e.SearchFrom = uint64(from)
	e.Sequenced, e.Index = index != nil, 0
	if index != nil {
		e.Index = uint64(*index)
	}
	if len(proofFlat)%sha256.Size != 0 {
		return fmt.Errorf("proof of %d bytes is not a list of hashes", len(proofFlat))
	}
	e.Proof = nil
	for i := 0; i < len(proofFlat); i += sha256.Size {
		e.Proof = append(e.Proof, proofFlat[i:i+sha256.Size])
	}
	if e.Proof == nil && len(e.Checkpoint) > 0 {
		e.Proof = [][]byte{}
	}
	return nil
}

// IndexProofs checks that every event is logged below size, the log size
// IndexEvents raises the index to, and returns each event's inclusion proof
// flattened for its row, in order.
func IndexProofs(events []*catalog.Event, size uint64) ([][]byte, error) {
	flat := make([][]byte, len(events))
	for i, e := range events {
		if !e.Entry.Logged() || e.Entry.Index >= size {
			return nil, fmt.Errorf("index events: event at %d is not logged below size %d", e.Entry.Index, size)
		}
		p, err := JoinProof(e.Entry.Proof)
		if err != nil {
			return nil, fmt.Errorf("index events: event at %d: %w", e.Entry.Index, err)
		}
		flat[i] = p
	}
	return flat, nil
}
