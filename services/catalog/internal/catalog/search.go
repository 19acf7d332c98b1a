package catalog

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/artifact"
	libdigest "github.com/custody-dev/custody/libs/digest"
)

// maxEnvironmentLen bounds the environment a search is filtered by.
const maxEnvironmentLen = 64

// SearchArtifacts returns up to pageSize logged artifacts that match q
// (MaxPageSize if pageSize is 0 or larger), each with the key id of its
// current envelope, in the order they were recorded, starting after
// pageToken ("" for the first page). next is the token of the following
// page, "" when there are no more. Paging has ListArtifacts' guarantees.
//
// Every set field of q is validated by the rule of what it matches
// (ErrInvalid otherwise), so a filter is bounded and printable before it
// reaches the store, where it is a bound parameter. A page token is bound
// to the query it was issued for: one from another query, or one
// SearchArtifacts did not return, fails with ErrInvalid.
func (c *Catalog) SearchArtifacts(ctx context.Context, q Query, pageSize int, pageToken string) (list []Listed, next string, err error) {
	switch {
	case pageSize < 0:
		return nil, "", fmt.Errorf("%w: page_size %d: want 0 (the default, %d) to %d", ErrInvalid, pageSize, MaxPageSize, MaxPageSize)
	case pageSize == 0 || pageSize > MaxPageSize:
		pageSize = MaxPageSize
	}
	if err := validateQuery(q); err != nil {
		return nil, "", err
	}
	fp := q.fingerprint()
	var after int64
	if pageToken != "" {
		if after, err = parseSearchToken(pageToken, fp); err != nil {
			return nil, "", fmt.Errorf("%w: page_token: %v: send the next_page_token of the previous page with the same filters, or none to start over", ErrInvalid, err)
		}
	}
	list, err = c.store.SearchArtifacts(ctx, q, after, pageSize+1)
	if err != nil {
		return nil, "", unavailable("search artifacts", err)
	}
	if len(list) > pageSize {
		list = list[:pageSize]
		next = encodeSearchToken(list[len(list)-1].ID, fp)
	}
	return list, next, nil
}

func validateQuery(q Query) error {
	var errs []string
	if q.Name != "" && !ValidName(q.Name) {
		errs = append(errs, fmt.Sprintf("name %q: not a valid artifact name", trunc(q.Name)))
	}
	if q.Version != "" && !ValidVersion(q.Version) {
		errs = append(errs, fmt.Sprintf("version %q: not a valid version", trunc(q.Version)))
	}
	if q.Digest != "" && !libdigest.Valid(q.Digest) {
		errs = append(errs, fmt.Sprintf("digest %q: want sha256:<64 lowercase hex>", trunc(q.Digest)))
	}
	if q.BuilderID != "" {
		if id, err := spiffeid.FromString(q.BuilderID); err != nil || id.String() != q.BuilderID {
			errs = append(errs, fmt.Sprintf("builder_id %q: want a SPIFFE ID in canonical form", trunc(q.BuilderID)))
		}
	}
	if len(q.SourceRepo) > maxRepoLen || !printable(q.SourceRepo) {
		errs = append(errs, fmt.Sprintf("source_repo: want up to %d printable characters", maxRepoLen))
	}
	if len(q.SourceCommit) > maxCommitLen || !printable(q.SourceCommit) || strings.ContainsFunc(q.SourceCommit, unicode.IsSpace) {
		errs = append(errs, fmt.Sprintf("source_commit: want up to %d printable characters without spaces", maxCommitLen))
	}
	if q.Channel != "" && !artifact.ValidChannel(q.Channel) {
		errs = append(errs, fmt.Sprintf("channel %q: not a valid channel", trunc(q.Channel)))
	}
	if len(q.KeyID) > maxKeyIDLen || !printable(q.KeyID) {
		errs = append(errs, fmt.Sprintf("signed_by_key_id: want up to %d printable characters, such as a key id from the signer's ListPublicKeys", maxKeyIDLen))
	}
	if len(q.Environment) > maxEnvironmentLen || !printable(q.Environment) || strings.ContainsFunc(q.Environment, unicode.IsSpace) {
		errs = append(errs, fmt.Sprintf("deployed_environment: want up to %d printable characters without spaces", maxEnvironmentLen))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// fingerprint identifies the query a page token belongs to: each field
// length-prefixed, so no two queries share an encoding.
func (q Query) fingerprint() [8]byte {
	h := sha256.New()
	for _, f := range []string{q.Name, q.Version, q.Digest, q.BuilderID, q.SourceRepo, q.SourceCommit, q.Channel, q.KeyID, q.Environment} {
		h.Write(binary.AppendUvarint(nil, uint64(len(f))))
		h.Write([]byte(f))
	}
	var fp [8]byte
	copy(fp[:], h.Sum(nil))
	return fp
}

// searchTokenVersion is the first byte of a search page token; then the
// query's fingerprint, then the uvarint ID of the page's last artifact.
const searchTokenVersion = 2

func encodeSearchToken(afterID int64, fp [8]byte) string {
	b := append([]byte{searchTokenVersion}, fp[:]...)
	b = binary.AppendUvarint(b, uint64(afterID))
	return base64.RawURLEncoding.EncodeToString(b)
}

// parseSearchToken returns the artifact ID that a token of
// encodeSearchToken for the query with fingerprint fp continues after. It
// accepts only such tokens, byte for byte. The token is not secret and
// needs no MAC: it only moves the start of an ID range that the caller may
// read anyway, and the fingerprint catches tokens reused with other
// filters.
func parseSearchToken(tok string, fp [8]byte) (int64, error) {
	const maxLen = 27 // base64 of 1 + 8 + a 10-byte uvarint
	if len(tok) > maxLen {
		return 0, fmt.Errorf("malformed token (%d characters)", len(tok))
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	if err != nil || len(b) < 10 || b[0] != searchTokenVersion {
		return 0, fmt.Errorf("malformed token %q", tok)
	}
	if [8]byte(b[1:9]) != fp {
		return 0, fmt.Errorf("token %q belongs to a search with other filters", tok)
	}
	id, n := binary.Uvarint(b[9:])
	if n != len(b)-9 || id == 0 || id > math.MaxInt64 || encodeSearchToken(int64(id), fp) != tok {
		return 0, fmt.Errorf("malformed token %q", tok)
	}
	return int64(id), nil
}

// DeploymentsOf returns the recorded deployments of the listed artifacts
// (a page of SearchArtifacts), in the order they were recorded.
func (c *Catalog) DeploymentsOf(ctx context.Context, list []Listed) ([]Deployed, error) {
	if len(list) == 0 {
		return nil, nil
	}
	seen := make(map[string]bool, len(list))
	digests := make([]string, 0, len(list))
	for _, l := range list {
		if !seen[l.Artifact.Digest] {
			seen[l.Artifact.Digest] = true
			digests = append(digests, l.Artifact.Digest)
		}
	}
	slices.Sort(digests)
	d, err := c.store.DeploymentsOf(ctx, digests)
	if err != nil {
		return nil, unavailable("look up deployments", err)
	}
	// The store answers in chunks of digests; the page is in one order.
	slices.SortStableFunc(d, func(a, b Deployed) int { return cmp.Compare(a.Deployment.ID, b.Deployment.ID) })
	return d, nil
}
