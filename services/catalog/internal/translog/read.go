package translog

import (
	"context"
	"fmt"

	"github.com/transparency-dev/tessera/client"
)

// entryBundleWidth is the number of entries in a full tlog-tiles entry
// bundle.
const entryBundleWidth = 256

// Entries returns the entries [start, start+n) of the tree of size entries.
// The caller checks that start+n <= size and that size is at most a
// published tree size; Entries reads only what that tree holds.
func (l *Log) Entries(ctx context.Context, start, n, size uint64) ([][]byte, error) {
	if n == 0 || start+n > size || start+n < start {
		return nil, fmt.Errorf("%w: entries [%d, %d+%d) of a tree of %d", ErrIntegrity, start, start, n, size)
	}
	out := make([][]byte, 0, n)
	for idx := start; idx < start+n; {
		b, err := client.GetEntryBundle(ctx, l.reader.ReadEntryBundle, idx/entryBundleWidth, size)
		if err != nil {
			return nil, fmt.Errorf("%w: read entry bundle %d: %v", ErrUnavailable, idx/entryBundleWidth, err)
		}
		off := idx % entryBundleWidth
		if off >= uint64(len(b.Entries)) {
			return nil, fmt.Errorf("%w: entry bundle %d has %d entries, want entry %d", ErrIntegrity, idx/entryBundleWidth, len(b.Entries), idx)
		}
		for _, e := range b.Entries[off:] {
			if idx == start+n {
				break
			}
			out = append(out, e)
			idx++
		}
	}
	return out, nil
}

// InclusionProof returns an RFC 6962 inclusion proof for entry index in the
// tree of size entries, which must not exceed a published tree size.
func (l *Log) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	p, err := l.inclusionProof(ctx, index, size)
	if err != nil {
		return nil, fmt.Errorf("%w: inclusion proof for entry %d in a tree of %d: %v", ErrUnavailable, index, size, err)
	}
	return p, nil
}
