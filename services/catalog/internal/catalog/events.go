package catalog

import (
	"context"
	"errors"
	"fmt"

	libdigest "github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/tlog"
)

// MaxEventsPageSize is the most entries ListEvents returns at once, and the
// page size when none is given.
const MaxEventsPageSize = 500

// Prover proves many log entries against one checkpoint.
type Prover interface {
	// ProveMany returns the latest served (co-signed) checkpoint and an
	// inclusion proof against it for each index; a nil proof for an index
	// the checkpoint does not cover yet.
	ProveMany(ctx context.Context, indices []uint64) (checkpoint []byte, proofs [][][]byte, err error)
}

// ListEvents returns up to pageSize (0 or more than MaxEventsPageSize:
// MaxEventsPageSize) logged entries about digest, in log order, after
// pageToken ("" for the first page): the publications of every
// name@version with these bytes, their re-signatures, and every event with
// digest as its subject. Each entry's proof is against the latest
// co-signed checkpoint when the catalog has a Prover (else, or for an entry
// that checkpoint does not cover, against the one it was logged under), and
// is verified, with the leaf's subject, before it is returned. next is ""
// when there are no more. A token ListEvents did not return fails with
// ErrInvalid; stored evidence that does not verify fails with ErrIntegrity.
func (c *Catalog) ListEvents(ctx context.Context, digest string, pageSize int, pageToken string) (entries []Entry, next string, err error) {
	if !libdigest.Valid(digest) {
		return nil, "", fmt.Errorf("%w: subject_digest %q: want sha256:<64 lowercase hex>", ErrInvalid, trunc(digest))
	}
	switch {
	case pageSize < 0:
		return nil, "", fmt.Errorf("%w: page_size %d: want 0 (the default, %d) to %d", ErrInvalid, pageSize, MaxEventsPageSize, MaxEventsPageSize)
	case pageSize == 0 || pageSize > MaxEventsPageSize:
		pageSize = MaxEventsPageSize
	}
	after := int64(-1)
	if pageToken != "" {
		// Tokens carry the last index plus one: IDs in tokens are positive.
		n, err := parsePageToken(pageToken)
		if err != nil {
			return nil, "", fmt.Errorf("%w: page_token: %v: send the next_page_token of the previous page, or none to start over", ErrInvalid, err)
		}
		after = n - 1
	}
	entries, err = c.store.EntriesBySubject(ctx, digest, after, pageSize+1)
	if err != nil {
		return nil, "", unavailable("list entries", err)
	}
	if len(entries) > pageSize {
		entries = entries[:pageSize]
		next = encodePageToken(int64(entries[len(entries)-1].Index) + 1)
	}
	if err := c.reprove(ctx, entries); err != nil {
		return nil, "", err
	}
	for i := range entries {
		if err := c.verifyEntry(&entries[i], digest); err != nil {
			return nil, "", err
		}
	}
	return entries, next, nil
}

// reprove replaces the stored proofs of entries with proofs against the
// latest co-signed checkpoint, so that one checkpoint covers a whole page.
func (c *Catalog) reprove(ctx context.Context, entries []Entry) error {
	if c.prover == nil || len(entries) == 0 {
		return nil
	}
	indices := make([]uint64, len(entries))
	for i, e := range entries {
		indices[i] = e.Index
	}
	cp, proofs, err := c.prover.ProveMany(ctx, indices)
	if err != nil {
		return logError("prove entries", err)
	}
	if len(proofs) != len(entries) {
		return fmt.Errorf("%w: %d proofs for %d entries", ErrIntegrity, len(proofs), len(entries))
	}
	for i := range entries {
		if proofs[i] != nil {
			entries[i].Proof, entries[i].Checkpoint = proofs[i], cp
		}
	}
	return nil
}

// verifyEntry re-checks a logged entry before it leaves the catalog: its
// checkpoint is the log's, it includes the leaf, and the leaf is about
// digest.
func (c *Catalog) verifyEntry(e *Entry, digest string) error {
	cp, err := tlog.OpenCheckpoint(e.Checkpoint, c.verifier)
	if err == nil {
		err = tlog.VerifyInclusion(e.Leaf, e.Index, e.Proof, cp)
	}
	var parsed *tlog.Entry
	if err == nil {
		parsed, err = tlog.ParseEntry(e.Leaf)
	}
	if err == nil && parsed.Subject.Digest != digest {
		err = errors.New("stored entry is about another digest")
	}
	if err != nil {
		return fmt.Errorf("%w: log entry %d: %v", ErrIntegrity, e.Index, err)
	}
	return nil
}
