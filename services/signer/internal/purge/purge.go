// Package purge asks the cdn-broker to purge from every cache the artifacts
// a revoked key version signed.
package purge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
)

// Reason is the reason a key revocation purges under; the broker accepts it
// from the signer only.
const Reason = "key-revoked"

// Bounds on one revocation's purge.
const (
	// MaxDigests bounds the digests one revocation purges; more fails the
	// purge (it stays pending and an admin purges by hand, see
	// docs/runbooks/key-compromise.md) rather than purging part silently.
	MaxDigests = 100_000
	// batch is the broker's limit per PurgeDigests call.
	batch    = 100
	pageSize = 1000
)

// ErrUnavailable: the catalog or the broker could not be asked; the purge
// is to be retried.
var ErrUnavailable = errors.New("the revocation's purge cannot be asked for")

// Catalog is the part of the catalog's API that knows which key version
// signed each artifact.
type Catalog interface {
	SearchArtifacts(ctx context.Context, in *catalogv1.SearchArtifactsRequest, opts ...grpc.CallOption) (*catalogv1.SearchArtifactsResponse, error)
}

// Broker is the cdn-broker's purge queue.
type Broker interface {
	PurgeDigests(ctx context.Context, in *cdnbrokerv1.PurgeDigestsRequest, opts ...grpc.CallOption) (*cdnbrokerv1.PurgeDigestsResponse, error)
}

var (
	_ Catalog = catalogv1.CatalogServiceClient(nil)
	_ Broker  = cdnbrokerv1.CdnBrokerServiceClient(nil)
)

// KeyRevoked purges key revocations. It is safe for concurrent use.
type KeyRevoked struct {
	Catalog Catalog
	Broker  Broker
}

// Digests returns the digests of the artifacts whose current envelope the
// key version keyID signed and was recorded at or after effective (the
// catalog's signed_at: the artifact's publication, or its latest
// re-signature; an older catalog that sends no signed_at is judged by the
// artifact's created_at), each once, in the catalog's order.
func (p *KeyRevoked) Digests(ctx context.Context, keyID string, effective time.Time) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	token := ""
	for {
		resp, err := p.Catalog.SearchArtifacts(ctx, &catalogv1.SearchArtifactsRequest{SignedByKeyId: keyID, PageSize: pageSize, PageToken: token})
		if err != nil {
			return nil, fmt.Errorf("%w: search the artifacts key %s signed: %v", ErrUnavailable, keyID, status.Convert(err).Message())
		}
		for _, la := range resp.GetArtifacts() {
			a := la.GetArtifact()
			if la.GetKeyId() != keyID {
				return nil, fmt.Errorf("%w: the catalog returned %s@%s signed by %q for key %s", ErrUnavailable, a.GetName(), a.GetVersion(), la.GetKeyId(), keyID)
			}
			if signedAt(la).Before(effective) || seen[a.GetDigest()] {
				continue
			}
			seen[a.GetDigest()] = true
			out = append(out, a.GetDigest())
			if len(out) > MaxDigests {
				return nil, fmt.Errorf("%w: key %s signed more than %d artifacts since %s: purge them by hand", ErrUnavailable, keyID, MaxDigests, effective.UTC().Format(time.RFC3339))
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

// Purge asks the broker to purge every digest Digests returns, under
// reference. It is idempotent: the broker queues one job per (digest,
// reference), so a retry after a failure part way asks again for all.
func (p *KeyRevoked) Purge(ctx context.Context, keyID string, effective time.Time, reference string) (int, error) {
	digests, err := p.Digests(ctx, keyID, effective)
	if err != nil {
		return 0, err
	}
	for chunk := range slices.Chunk(digests, batch) {
		if _, err := p.Broker.PurgeDigests(ctx, &cdnbrokerv1.PurgeDigestsRequest{Digests: chunk, Reason: Reason, Reference: reference}); err != nil {
			return 0, fmt.Errorf("%w: purge %d artifacts of key %s: %v", ErrUnavailable, len(digests), keyID, status.Convert(err).Message())
		}
	}
	return len(digests), nil
}

// signedAt is when the catalog recorded la's current envelope. A catalog
// older than signed_at leaves it unset: its created_at is then the best
// known, and misses only a re-signature (as the purge did before).
func signedAt(la *catalogv1.ListedArtifact) time.Time {
	if at := la.GetSignedAt(); at != nil {
		return at.AsTime()
	}
	return la.GetArtifact().GetCreatedAt().AsTime()
}
