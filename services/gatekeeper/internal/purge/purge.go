// Package purge has the cdn-broker purge every deployed artifact from every
// cache when the kill switch goes on, and one artifact when it is revoked,
// asking until the broker accepts.
package purge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/backoff"
	"github.com/custody-dev/custody/libs/daemon"
	digests "github.com/custody-dev/custody/libs/digest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/strictjson"
)

// Reason is the reason the kill switch purges under; the broker accepts it
// from the gatekeeper only.
const Reason = "kill-switch"

// ReasonRevoked is the reason an artifact revocation purges under
// (decision 0105); the broker accepts it from the gatekeeper and admins.
const ReasonRevoked = "artifact-revoked"

// Bounds.
const (
	// MaxDigests bounds the digests one kill switch purges; more fails
	// the purge (it stays pending) rather than purging part silently.
	MaxDigests = 100_000
	// maxPending bounds the kill switches and revocations whose purge
	// waits.
	maxPending = 1000
	batch      = 100 // the broker's limit per PurgeDigests
	pageSize   = 1000
	maxFile    = 1 << 20
)

// ErrUnavailable: the catalog or the broker could not be asked; the purge
// stays pending.
var ErrUnavailable = errors.New("the purge cannot be asked for")

// Catalog knows the deployments.
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

// Pending is one kill switch or artifact revocation whose purge the
// broker has not accepted.
type Pending struct {
	Reference string    `json:"reference"`
	Queued    time.Time `json:"queued"`
	// Digest, if set, is the one revoked artifact to purge (reason
	// ReasonRevoked); without it every deployed artifact is purged (the
	// kill switch).
	Digest string `json:"digest,omitempty"`
}

// Queue keeps pending purges in a file and asks for them until accepted.
// It is safe for concurrent use.
type Queue struct {
	path    string
	catalog Catalog
	broker  Broker
	logger  *slog.Logger

	mu      sync.Mutex
	pending []Pending
	flushMu sync.Mutex
	kick    chan struct{}
}

// Open loads the pending purges from path (missing: none); a file that does
// not parse is an error, never a silent reset.
func Open(path string, catalog Catalog, broker Broker, logger *slog.Logger) (*Queue, error) {
	q := &Queue{path: path, catalog: catalog, broker: broker, logger: logger, kick: make(chan struct{}, 1)}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return q, nil
	case err != nil:
		return nil, fmt.Errorf("kill-switch purges: %w", err)
	}
	if err := strictjson.Decode(b, maxFile, &q.pending); err != nil {
		return nil, fmt.Errorf("kill-switch purges %s: %w", path, err)
	}
	if len(q.pending) > maxPending {
		return nil, fmt.Errorf("kill-switch purges %s: %d pending, more than %d", path, len(q.pending), maxPending)
	}
	for i, p := range q.pending {
		if p.Reference == "" || len(p.Reference) > 128 || (p.Digest != "" && !digests.Valid(p.Digest)) {
			return nil, fmt.Errorf("kill-switch purges %s: entry %d has no valid reference or digest", path, i)
		}
	}
	return q, nil
}

// Add records a purge of every deployed artifact under reference
// (idempotent) and asks for it soon.
func (q *Queue) Add(reference string, now time.Time) error {
	return q.add(Pending{Reference: reference, Queued: now.UTC()})
}

// AddRevoked records a purge of the revoked artifact dgst, under the
// reference RevokedReference(dgst) (idempotent), and asks for it soon.
func (q *Queue) AddRevoked(dgst string, now time.Time) error {
	if !digests.Valid(dgst) {
		return fmt.Errorf("purge of a revoked artifact: digest %q: want sha256:<64 lowercase hex>", quote.Prefix(dgst))
	}
	return q.add(Pending{Reference: RevokedReference(dgst), Queued: now.UTC(), Digest: dgst})
}

// RevokedReference is the purge reference of the revocation of dgst: one
// per digest, since a revocation is final. It holds the digest's first 32
// hex digits (128 bits), since the broker takes references of at most 64
// characters.
func RevokedReference(dgst string) string {
	return "artifact-revoked-" + strings.TrimPrefix(dgst, "sha256:")[:32]
}

func (q *Queue) add(p Pending) error {
	reference := p.Reference
	q.mu.Lock()
	defer q.mu.Unlock()
	if slices.ContainsFunc(q.pending, func(p Pending) bool { return p.Reference == reference }) {
		return nil
	}
	if len(q.pending) >= maxPending {
		return fmt.Errorf("%w: %d purges wait for the broker already", ErrUnavailable, len(q.pending))
	}
	next := append(slices.Clip(q.pending), p)
	if err := q.save(next); err != nil {
		return err
	}
	q.pending = next
	select {
	case q.kick <- struct{}{}:
	default:
	}
	return nil
}

// Pending is how many purges wait for the broker.
func (q *Queue) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// Deployed returns every digest the catalog has a deployment of, each once.
func (q *Queue) Deployed(ctx context.Context) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	token := ""
	for {
		resp, err := q.catalog.SearchArtifacts(ctx, &catalogv1.SearchArtifactsRequest{PageSize: pageSize, PageToken: token})
		if err != nil {
			return nil, fmt.Errorf("%w: list deployments: %v", ErrUnavailable, status.Convert(err).Message())
		}
		for _, d := range resp.GetDeployments() {
			if seen[d.GetDigest()] {
				continue
			}
			seen[d.GetDigest()] = true
			out = append(out, d.GetDigest())
			if len(out) > MaxDigests {
				return nil, fmt.Errorf("%w: more than %d deployed artifacts: purge by hand", ErrUnavailable, MaxDigests)
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

// Flush asks for each pending purge in order and forgets those the broker
// accepted; it returns the first failure.
func (q *Queue) Flush(ctx context.Context) error {
	q.flushMu.Lock()
	defer q.flushMu.Unlock()
	q.mu.Lock()
	pending := slices.Clone(q.pending)
	q.mu.Unlock()
	var first error
	for _, p := range pending {
		n, err := q.purge(ctx, p)
		if err != nil {
			q.logger.WarnContext(ctx, "purge not accepted yet; asked again", slog.String("reference", p.Reference), slog.Any("error", err))
			first = cmpOr(first, err)
			continue
		}
		q.mu.Lock()
		next := slices.DeleteFunc(slices.Clone(q.pending), func(x Pending) bool { return x.Reference == p.Reference })
		err = q.save(next)
		if err == nil {
			q.pending = next
		}
		q.mu.Unlock()
		if err != nil {
			return err
		}
		q.logger.InfoContext(ctx, "purge queued at the broker", slog.String("reference", p.Reference), slog.Int("digests", n))
	}
	return first
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (q *Queue) purge(ctx context.Context, p Pending) (int, error) {
	reference := p.Reference
	if p.Digest != "" {
		if _, err := q.broker.PurgeDigests(ctx, &cdnbrokerv1.PurgeDigestsRequest{Digests: []string{p.Digest}, Reason: ReasonRevoked, Reference: reference}); err != nil {
			return 0, fmt.Errorf("%w: purge revoked artifact %s: %v", ErrUnavailable, p.Digest, status.Convert(err).Message())
		}
		return 1, nil
	}
	digests, err := q.Deployed(ctx)
	if err != nil {
		return 0, err
	}
	for chunk := range slices.Chunk(digests, batch) {
		if _, err := q.broker.PurgeDigests(ctx, &cdnbrokerv1.PurgeDigestsRequest{Digests: chunk, Reason: Reason, Reference: reference}); err != nil {
			return 0, fmt.Errorf("%w: purge %d deployed artifacts: %v", ErrUnavailable, len(digests), status.Convert(err).Message())
		}
	}
	return len(digests), nil
}

// Waits between passes the broker refused or did not answer (decision
// 0126): the n-th failed pass in a row waits RetryMin·2^(n-1), capped at
// RetryMax, jittered (libs/backoff); a kill switch's purge must not wait
// long, so the cap is a minute.
const (
	RetryMin = 5 * time.Second
	RetryMax = time.Minute
)

// Clock is what Run waits on; the zero value is the real one.
type Clock struct {
	// After is the timer Run waits on between passes; nil: time.After.
	After func(time.Duration) <-chan time.Time
	// Jitter returns a number in [0, 1); nil: math/rand/v2.
	Jitter func() float64
}

// Run asks for pending purges at once, again at once when one is added,
// and after a failed pass again with backoff (RetryMin doubling to
// RetryMax, jittered) until every pending purge is accepted; the wait goes
// back to RetryMin once a pass succeeds. It returns nil when ctx ends.
func (q *Queue) Run(ctx context.Context, c Clock) error {
	after := c.After
	if after == nil {
		after = time.After
	}
	b := backoff.New(backoff.Policy{Min: RetryMin, Max: RetryMax, Jitter: c.Jitter})
	var retry <-chan time.Time
	pass := func(retried bool) {
		if q.Flush(ctx) == nil { // failures are logged in Flush
			b.Reset()
			retry = nil
			return
		}
		// A pass that a new purge kicked while a retry waits does not
		// lengthen the wait: only the scheduled retries count.
		if retried || retry == nil {
			retry = after(b.Next())
		}
	}
	pass(false)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-retry:
			retry = nil
			pass(true)
		case <-q.kick:
			pass(false)
		}
	}
}

func (q *Queue) save(p []Pending) error {
	b, _ := json.Marshal(p)
	if err := daemon.WriteFileAtomic(q.path, b, 0o600); err != nil {
		return fmt.Errorf("kill-switch purges: %w", err)
	}
	return nil
}
