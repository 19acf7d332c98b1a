package catalog

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
)

// MaxPageSize is the most artifacts ListArtifacts returns at once, and the
// page size when none is given.
const MaxPageSize = 1000

// maxKeyIDLen bounds the key id a listing is filtered by.
const maxKeyIDLen = 256

// ListArtifacts returns up to pageSize logged artifacts (MaxPageSize if
// pageSize is 0 or larger), each with the key id of its current envelope,
// in the order they were recorded, starting after pageToken ("" for the
// first page). With keyID set it returns only artifacts whose current
// envelope is signed by keyID. next is the token of the following page, ""
// when there are no more. The order is stable, so paging sees every
// artifact recorded before the listing began exactly once; artifacts
// recorded meanwhile may or may not be seen. A token that ListArtifacts
// did not return fails with ErrInvalid.
func (c *Catalog) ListArtifacts(ctx context.Context, keyID string, pageSize int, pageToken string) (list []Listed, next string, err error) {
	switch {
	case pageSize < 0:
		return nil, "", fmt.Errorf("%w: page_size %d: want 0 (the default, %d) to %d", ErrInvalid, pageSize, MaxPageSize, MaxPageSize)
	case pageSize == 0 || pageSize > MaxPageSize:
		pageSize = MaxPageSize
	}
	if len(keyID) > maxKeyIDLen || !printable(keyID) {
		return nil, "", fmt.Errorf("%w: signed_by_key_id: want up to %d printable characters, such as a key id from the signer's ListPublicKeys", ErrInvalid, maxKeyIDLen)
	}
	var after int64
	if pageToken != "" {
		if after, err = parsePageToken(pageToken); err != nil {
			return nil, "", fmt.Errorf("%w: page_token: %v: send the next_page_token of the previous page, or none to start over", ErrInvalid, err)
		}
	}
	// One more than asked tells whether there is a next page.
	list, err = c.store.ListArtifacts(ctx, keyID, after, pageSize+1)
	if err != nil {
		return nil, "", unavailable("list artifacts", err)
	}
	if len(list) > pageSize {
		list = list[:pageSize]
		next = encodePageToken(list[len(list)-1].ID)
	}
	return list, next, nil
}

// pageTokenVersion is the first byte of a page token; the rest is the
// uvarint ID of the last artifact of the page.
const pageTokenVersion = 1

func encodePageToken(afterID int64) string {
	b := binary.AppendUvarint([]byte{pageTokenVersion}, uint64(afterID))
	return base64.RawURLEncoding.EncodeToString(b)
}

// parsePageToken returns the artifact ID that a token of encodePageToken continues
// after. It accepts only tokens encodePageToken returns, byte for byte.
func parsePageToken(tok string) (int64, error) {
	const maxLen = 16 // base64 of a version byte and a 10-byte uvarint
	if len(tok) > maxLen {
		return 0, fmt.Errorf("malformed token (%d characters)", len(tok))
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	if err != nil || len(b) < 2 || b[0] != pageTokenVersion {
		return 0, fmt.Errorf("malformed token %q", trunc(tok))
	}
	id, n := binary.Uvarint(b[1:])
	if n != len(b)-1 || id == 0 || id > math.MaxInt64 || encodePageToken(int64(id)) != tok {
		return 0, fmt.Errorf("malformed token %q", trunc(tok))
	}
	return int64(id), nil
}
