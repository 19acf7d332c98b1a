package retention

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/backoff"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/publisher/internal/bindings"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

// Errors of a run.
var (
	// ErrUnavailable: the catalog (or the store) could not be asked;
	// nothing was deleted.
	ErrUnavailable = errors.New("retention cannot ask the catalog")
	// ErrBusy: another run is under way.
	ErrBusy = errors.New("a retention run is already under way")
	// ErrNoPolicy: the publisher has no retention policy.
	ErrNoPolicy = errors.New("no retention policy is configured")
)

// Bounds on what one run reads from the catalog.
const (
	// MaxArtifacts bounds the artifacts of all channels a run considers;
	// more fails the run (nothing deleted) rather than acting on part.
	MaxArtifacts = 1 << 20
	// maxEventPages bounds ListEvents pages read per digest.
	maxEventPages = 1000
	pageSize      = 1000
)

// Blobs is what retention needs from the encrypted store.
type Blobs interface {
	Locate(ctx context.Context, digest string) (string, error)
	DestroyKey(ctx context.Context, digest string) error
	DeleteCiphertext(ctx context.Context, data string) error
}

var _ Blobs = (*sealed.Store)(nil)

// Catalog is the part of the catalog's API retention asks and logs to.
type Catalog interface {
	SearchArtifacts(ctx context.Context, in *catalogv1.SearchArtifactsRequest, opts ...grpc.CallOption) (*catalogv1.SearchArtifactsResponse, error)
	ListEvents(ctx context.Context, in *catalogv1.ListEventsRequest, opts ...grpc.CallOption) (*catalogv1.ListEventsResponse, error)
	GetLineage(ctx context.Context, in *catalogv1.GetLineageRequest, opts ...grpc.CallOption) (*catalogv1.GetLineageResponse, error)
	AppendEvent(ctx context.Context, in *catalogv1.AppendEventRequest, opts ...grpc.CallOption) (*catalogv1.AppendEventResponse, error)
}

var _ Catalog = catalogv1.CatalogServiceClient(nil)

// Purger is the cdn-broker's purge queue (PurgeDigests): a deleted blob is
// purged from every edge and CDN cache, so that nothing keeps serving what
// retention destroyed.
type Purger interface {
	PurgeDigests(ctx context.Context, in *cdnbrokerv1.PurgeDigestsRequest, opts ...grpc.CallOption) (*cdnbrokerv1.PurgeDigestsResponse, error)
}

var _ Purger = cdnbrokerv1.CdnBrokerServiceClient(nil)

// PurgeReason is the reason retention purges under; the broker accepts it
// from the publisher only.
const PurgeReason = "retention-deleted"

// Waits between hand-offs of a deletion's purge that the broker refused
// or did not answer: the n-th failed retry in a row waits
// retryMin·2^n, capped at the lower of the run interval and retryMax,
// times a jitter factor in [0.5, 1.5) (capped again).
const (
	retryMin = 5 * time.Second
	retryMax = 5 * time.Minute
)

// Item is one name@version a run selected.
type Item struct {
	Name, Version, Digest, Channel string
	// Reason says why it was selected, or for a kept item why it is kept.
	Reason        string
	BlobDestroyed bool
}

// Result is what a run did (or with DryRun would do).
type Result struct {
	Deleted, Kept []Item
	DryRun        bool
}

// Runner applies a policy. It is safe for concurrent use; runs are one at
// a time.
type Runner struct {
	policy  *Policy
	blobs   Blobs
	binds   *bindings.Store
	catalog Catalog
	purger  Purger
	journal string
	logger  *slog.Logger
	now     func() time.Time
	after   func(time.Duration) <-chan time.Time
	jitter  func() float64

	run sync.Mutex // one run (or retry of the journal) at a time
	// bind excludes deletions from uploads' last step: an upload checks
	// its blob's record exists and binds under RLock; a run re-reads the
	// bindings and deletes under Lock, so it never destroys a blob that an
	// upload has just bound.
	bind sync.RWMutex

	// mu guards journalled: every journal entry on disk, by digest.
	mu         sync.Mutex
	journalled map[string]journalState
	// left wakes Loop when a run or Recover leaves journal entries.
	left     chan struct{}
	failures prometheus.Counter

	// crashAfter, in tests, stops a deletion after the named step as a
	// crash would.
	crashAfter string
}

// journalState is what the metrics need of one journal entry.
type journalState struct {
	at    time.Time // when the deletion was decided
	purge bool      // its purge waits for the broker to accept it
}

// Config is what New needs.
type Config struct {
	Policy   *Policy // nil: runs fail with ErrNoPolicy
	Blobs    Blobs
	Bindings *bindings.Store
	Catalog  Catalog
	// Purger, if set, has every destroyed blob purged from the caches
	// before the deletion is logged; nil: caches are left to expire.
	Purger     Purger
	JournalDir string // where deletions under way are journalled
	Logger     *slog.Logger
	Now        func() time.Time // nil: time.Now
	// After is the clock Loop waits on between retries of the journal;
	// nil: time.After.
	After func(time.Duration) <-chan time.Time
	// Jitter returns a number in [0, 1); nil: math/rand/v2.
	Jitter func() float64
	// Registerer receives the retention metrics
	// (custody_retention_purges_pending,
	// custody_retention_purge_oldest_pending_timestamp_seconds,
	// custody_retention_purge_handoff_failures_total); nil: not
	// registered.
	Registerer prometheus.Registerer
}

// New returns a runner; it creates the journal directory.
func New(c Config) (*Runner, error) {
	if err := os.MkdirAll(c.JournalDir, 0o700); err != nil {
		return nil, fmt.Errorf("retention journal: %w", err)
	}
	now, after, jitter := c.Now, c.After, c.Jitter
	if now == nil {
		now = time.Now
	}
	if after == nil {
		after = time.After
	}
	if jitter == nil {
		jitter = rand.Float64
	}
	r := &Runner{policy: c.Policy, blobs: c.Blobs, binds: c.Bindings, catalog: c.Catalog, purger: c.Purger, journal: c.JournalDir, logger: c.Logger,
		now: now, after: after, jitter: jitter, journalled: map[string]journalState{}, left: make(chan struct{}, 1),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "custody_retention_purge_handoff_failures_total",
			Help: "Purges of blobs retention destroyed that the cdn-broker refused or did not answer."})}
	if c.Registerer != nil {
		err := errors.Join(
			c.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "custody_retention_purges_pending",
				Help: "Retention deletions whose purge the cdn-broker has not accepted yet (journalled until it does)."},
				func() float64 { n, _ := r.PendingPurges(); return float64(n) })),
			c.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "custody_retention_purge_oldest_pending_timestamp_seconds",
				Help: "When the oldest retention deletion whose purge the cdn-broker has not accepted was decided (Unix seconds; 0: none pending)."},
				func() float64 {
					if _, oldest := r.PendingPurges(); !oldest.IsZero() {
						return float64(oldest.UnixNano()) / 1e9
					}
					return 0
				})),
			c.Registerer.Register(r.failures))
		if err != nil {
			return nil, fmt.Errorf("retention metrics: %w", err)
		}
	}
	return r, nil
}

// PendingPurges reports how many journalled deletions wait for the broker
// to accept their purge, and when the oldest of them was decided (zero if
// none). Safe for concurrent use.
func (r *Runner) PendingPurges() (n int, oldest time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.journalled {
		if s.purge {
			n++
			if oldest.IsZero() || s.at.Before(oldest) {
				oldest = s.at
			}
		}
	}
	return n, oldest
}

// track records e as journalled; forget, as removed.
func (r *Runner) track(e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.journalled[e.Digest] = journalState{at: e.At, purge: r.needsPurge(e)}
}

func (r *Runner) forget(digest string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.journalled, digest)
}

// pending is how many deletions are journalled.
func (r *Runner) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.journalled)
}

// signalLeft wakes Loop if deletions are left in the journal.
func (r *Runner) signalLeft() {
	if r.pending() == 0 {
		return
	}
	select {
	case r.left <- struct{}{}:
	default:
	}
}

// Run applies the policy once. With dryRun nothing is changed.
func (r *Runner) Run(ctx context.Context, dryRun bool) (*Result, error) {
	if r.policy == nil {
		return nil, ErrNoPolicy
	}
	if !r.run.TryLock() {
		return nil, ErrBusy
	}
	defer r.run.Unlock()
	defer r.signalLeft()
	// Journals a crash left are finished first, so a run never plans
	// around a half-done deletion.
	if err := r.recover(ctx, true); err != nil {
		return nil, err
	}
	res := &Result{DryRun: dryRun}
	selected, err := r.plan(ctx, res)
	if err != nil {
		return nil, err
	}
	if dryRun || len(selected) == 0 {
		res.Deleted = selected
		return res, nil
	}
	deleted, err := r.execute(ctx, selected)
	res.Deleted = deleted
	if err != nil {
		return res, err
	}
	// Events last: a catalog that fails now leaves the journal, and the
	// next run (or start) logs them.
	if err := r.recover(ctx, true); err != nil {
		return res, err
	}
	return res, nil
}

// plan selects what the policy deletes and what must be kept. Every
// catalog question is asked here; any failure fails the run.
func (r *Runner) plan(ctx context.Context, res *Result) ([]Item, error) {
	var selected []Item
	total := 0
	for _, ch := range r.policy.channels() {
		rule := r.policy.Channels[ch]
		byName := map[string][]*catalogv1.Artifact{}
		token := ""
		for {
			resp, err := r.catalog.SearchArtifacts(ctx, &catalogv1.SearchArtifactsRequest{Channel: ch, PageSize: pageSize, PageToken: token})
			if err != nil {
				return nil, fmt.Errorf("%w: search channel %q: %v", ErrUnavailable, ch, err)
			}
			for _, la := range resp.GetArtifacts() {
				a := la.GetArtifact()
				if a.GetChannel() != ch {
					return nil, fmt.Errorf("%w: the catalog returned %s@%s of channel %q for channel %q", ErrUnavailable, a.GetName(), a.GetVersion(), a.GetChannel(), ch)
				}
				byName[a.GetName()] = append(byName[a.GetName()], a)
				total++
			}
			if total > MaxArtifacts {
				return nil, fmt.Errorf("%w: more than %d artifacts in the retained channels; nothing deleted", ErrUnavailable, MaxArtifacts)
			}
			if token = resp.GetNextPageToken(); token == "" {
				break
			}
		}
		now := r.now()
		for _, versions := range byName {
			// Newest first; equal times by version, so the order is stable.
			slices.SortFunc(versions, func(a, b *catalogv1.Artifact) int {
				if c := b.GetCreatedAt().AsTime().Compare(a.GetCreatedAt().AsTime()); c != 0 {
					return c
				}
				return strings.Compare(b.GetVersion(), a.GetVersion())
			})
			for i, a := range versions {
				if i == 0 {
					continue // the newest version of a name is always kept
				}
				var reason string
				switch {
				case rule.KeepLast > 0 && i >= rule.KeepLast:
					reason = fmt.Sprintf("beyond keep_last %d", rule.KeepLast)
				case rule.MaxAge > 0 && now.Sub(a.GetCreatedAt().AsTime()) > rule.MaxAge:
					reason = fmt.Sprintf("older than max_age %s", rule.MaxAge)
				default:
					continue
				}
				selected = append(selected, Item{Name: a.GetName(), Version: a.GetVersion(), Digest: a.GetDigest(), Channel: ch, Reason: reason})
			}
		}
	}
	// Local state: only what this publisher has bound (and not yet
	// deleted) to the digest the catalog names.
	var keep []Item
	live := selected[:0]
	for _, it := range selected {
		b, err := r.binds.Get(it.Name, it.Version)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // not stored here
		case err != nil:
			return nil, fmt.Errorf("retention: %w", err)
		case b.Deleted != nil:
			continue // deleted before
		case b.Digest != it.Digest:
			it.Reason = fmt.Sprintf("kept: bound here to %s, the catalog says %s", b.Digest, it.Digest)
			keep = append(keep, it)
			continue
		}
		live = append(live, it)
	}
	// The catalog's word on each digest.
	protected := map[string]string{}
	for _, it := range live {
		if _, ok := protected[it.Digest]; ok {
			continue
		}
		why, err := r.protection(ctx, it.Digest)
		if err != nil {
			return nil, err
		}
		protected[it.Digest] = why
	}
	var out []Item
	for _, it := range live {
		if why := protected[it.Digest]; why != "" {
			it.Reason = "kept: " + why
			keep = append(keep, it)
			continue
		}
		out = append(out, it)
	}
	res.Kept = keep
	return out, nil
}

// protection returns why the catalog says digest must be kept, or "".
func (r *Runner) protection(ctx context.Context, digest string) (string, error) {
	token := ""
	for page := 0; ; page++ {
		if page == maxEventPages {
			return "", fmt.Errorf("%w: more than %d pages of events about %s", ErrUnavailable, maxEventPages, digest)
		}
		resp, err := r.catalog.ListEvents(ctx, &catalogv1.ListEventsRequest{SubjectDigest: digest, PageSize: pageSize, PageToken: token})
		if err != nil {
			return "", fmt.Errorf("%w: list events about %s: %v", ErrUnavailable, digest, err)
		}
		for _, le := range resp.GetEntries() {
			e, err := tlog.ParseEntry(le.GetLeaf())
			if err != nil {
				return "", fmt.Errorf("%w: event %d about %s: %v", ErrUnavailable, le.GetIndex(), digest, err)
			}
			for _, p := range []string{"deployment.", "rollback."} {
				if strings.HasPrefix(e.Type, p) {
					return fmt.Sprintf("deployed (%s, log entry %d)", e.Type, le.GetIndex()), nil
				}
			}
			if strings.HasPrefix(e.Type, "approval.") {
				return fmt.Sprintf("on a protected channel (%s, log entry %d)", e.Type, le.GetIndex()), nil
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	lin, err := r.catalog.GetLineage(ctx, &catalogv1.GetLineageRequest{Node: digest, Direction: catalogv1.LineageDirection_LINEAGE_DIRECTION_DOWN, MaxDepth: 1})
	if err != nil {
		return "", fmt.Errorf("%w: deployments of %s: %v", ErrUnavailable, digest, err)
	}
	for _, d := range lin.GetDeployments() {
		if d.GetDigest() == digest {
			return fmt.Sprintf("deployed to %s", d.GetEnvironment()), nil
		}
	}
	return "", nil
}

// entry is one journalled deletion: every binding of one digest that the
// run deletes, and the ciphertext object to delete if the blob goes.
type entry struct {
	Digest  string    `json:"digest"`
	Destroy bool      `json:"destroy_blob"`
	Data    string    `json:"data,omitempty"`
	Items   []Item    `json:"items"`
	At      time.Time `json:"at"`
	// Done is set once the key, ciphertext and bindings are gone; only
	// the purge and the events remain.
	Done bool `json:"done"`
	// Purged is set once the broker accepted the purge of a destroyed
	// blob; only the events remain. Journals written before it existed
	// read as not purged: the purge is asked again under the same
	// reference, which the broker treats as the same job.
	Purged bool `json:"purged,omitempty"`
}

// needsPurge says e's blob is destroyed and the broker has not accepted
// its purge.
func (r *Runner) needsPurge(e *entry) bool {
	return r.purger != nil && e.Destroy && !e.Purged
}

// execute deletes the selected items under the bind lock, digest by digest.
func (r *Runner) execute(ctx context.Context, selected []Item) ([]Item, error) {
	r.bind.Lock()
	defer r.bind.Unlock()
	// Which name@versions still bind each digest, read under the lock.
	bound := map[string]map[string]bool{}
	err := r.binds.List(func(b bindings.Binding) error {
		if b.Deleted == nil {
			if bound[b.Digest] == nil {
				bound[b.Digest] = map[string]bool{}
			}
			bound[b.Digest][b.Name+"@"+b.Version] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("retention: %w", err)
	}
	byDigest := map[string][]Item{}
	var order []string
	for _, it := range selected {
		if byDigest[it.Digest] == nil {
			order = append(order, it.Digest)
		}
		byDigest[it.Digest] = append(byDigest[it.Digest], it)
	}
	var deleted []Item
	for _, d := range order {
		items := byDigest[d]
		rest := bound[d]
		for _, it := range items {
			delete(rest, it.Name+"@"+it.Version)
		}
		e := &entry{Digest: d, Destroy: len(rest) == 0, Items: items, At: r.now().UTC()}
		if e.Destroy {
			data, err := r.blobs.Locate(ctx, d)
			switch {
			case errors.Is(err, sealed.ErrNotFound):
			case err != nil:
				return deleted, fmt.Errorf("retention: %w", err)
			default:
				e.Data = data
			}
		}
		for i := range e.Items {
			e.Items[i].BlobDestroyed = e.Destroy
		}
		if err := r.writeJournal(e); err != nil {
			return deleted, err
		}
		if err := r.apply(ctx, e); err != nil {
			return deleted, err
		}
		deleted = append(deleted, e.Items...)
	}
	return deleted, nil
}

// apply does a journalled deletion's steps in order; every step may be
// repeated.
func (r *Runner) apply(ctx context.Context, e *entry) error {
	if e.Done {
		return nil
	}
	if e.Destroy {
		if err := r.blobs.DestroyKey(ctx, e.Digest); err != nil {
			return fmt.Errorf("retention: %w", err)
		}
		if r.crashAfter == "key" {
			return errCrash
		}
		if e.Data != "" {
			if err := r.blobs.DeleteCiphertext(ctx, e.Data); err != nil {
				return fmt.Errorf("retention: %w", err)
			}
		}
		if r.crashAfter == "ciphertext" {
			return errCrash
		}
	}
	for _, it := range e.Items {
		if err := r.binds.Tombstone(it.Name, it.Version, e.At); err != nil {
			return fmt.Errorf("retention: %w", err)
		}
	}
	e.Done = true
	return r.writeJournal(e)
}

var errCrash = errors.New("simulated crash")

// Recover finishes the deletions a crash left half done: their keys,
// ciphertext and bindings go at once. With events, their
// artifact.retention-deleted events are logged too and their journals
// removed; without, that waits for the next run (the catalog may not be
// up yet). Call it before serving uploads.
//
// A purge the broker refuses or does not answer keeps its journal and
// stops the recovery with ErrUnavailable; Loop asks again with backoff.
func (r *Runner) Recover(ctx context.Context, events bool) error {
	r.bind.Lock()
	defer r.bind.Unlock()
	defer r.signalLeft()
	return r.recoverLocked(ctx, events)
}

func (r *Runner) recover(ctx context.Context, events bool) error {
	return r.Recover(ctx, events)
}

func (r *Runner) recoverLocked(ctx context.Context, events bool) error {
	ents, err := os.ReadDir(r.journal)
	if err != nil {
		return fmt.Errorf("retention journal: %w", err)
	}
	for _, de := range ents {
		if !strings.HasSuffix(de.Name(), ".json") {
			if strings.HasPrefix(de.Name(), ".tmp-") {
				os.Remove(filepath.Join(r.journal, de.Name()))
			}
			continue
		}
		path := filepath.Join(r.journal, de.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("retention journal: %w", err)
		}
		var e entry
		if err := json.Unmarshal(b, &e); err != nil || journalName(e.Digest) != de.Name() {
			return fmt.Errorf("retention journal %s is damaged: inspect it and finish the deletion by hand", path)
		}
		r.track(&e)
		if err := r.apply(ctx, &e); err != nil {
			return err
		}
		if !events {
			continue
		}
		// Purge before logging: a purge that fails keeps the journal, so
		// it is asked again (the same reference: one job), and the events
		// are logged once, after it.
		if err := r.purge(ctx, &e); err != nil {
			return err
		}
		for _, it := range e.Items {
			if err := r.logEvent(ctx, &e, it); err != nil {
				return err
			}
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("retention journal: %w", err)
		}
		r.forget(e.Digest)
		r.logger.InfoContext(ctx, "retention deleted", slog.String("digest", e.Digest), slog.Bool("blob_destroyed", e.Destroy), slog.Int("bindings", len(e.Items)))
	}
	return nil
}

// purge asks the broker to purge a destroyed blob from every cache, once:
// the journal records that the broker accepted it.
func (r *Runner) purge(ctx context.Context, e *entry) error {
	if !r.needsPurge(e) {
		return nil
	}
	ref := purgeReference(e)
	_, err := r.purger.PurgeDigests(ctx, &cdnbrokerv1.PurgeDigestsRequest{Digests: []string{e.Digest}, Reason: PurgeReason, Reference: ref})
	if err != nil {
		r.failures.Inc()
		msg := status.Convert(err).Message()
		r.logger.WarnContext(ctx, "retention purge not accepted yet", slog.String("digest", e.Digest), slog.String("reference", ref),
			slog.Time("deleted_at", e.At), slog.String("error", msg))
		return fmt.Errorf("%w: purge %s from the caches: %v (deleted; the purge is asked again with backoff)", ErrUnavailable, e.Digest, msg)
	}
	e.Purged = true
	return r.writeJournal(e)
}

// purgeReference names one deletion (the digest and when it was decided),
// so a retried purge is the same job at the broker and the vendors.
func purgeReference(e *entry) string {
	return fmt.Sprintf("retention-%s-%d", strings.TrimPrefix(e.Digest, "sha256:")[:16], e.At.UnixNano())
}

// details of an artifact.retention-deleted event.
type details struct {
	Name          string `json:"name"`
	Version       string `json:"version"`
	Channel       string `json:"channel"`
	Reason        string `json:"reason"`
	BlobDestroyed bool   `json:"blob_destroyed"`
	DeletedAt     string `json:"deleted_at"`
}

func (r *Runner) logEvent(ctx context.Context, e *entry, it Item) error {
	d, _ := json.Marshal(details{Name: it.Name, Version: it.Version, Channel: it.Channel, Reason: it.Reason, BlobDestroyed: e.Destroy, DeletedAt: e.At.Format(time.RFC3339Nano)})
	_, err := r.catalog.AppendEvent(ctx, &catalogv1.AppendEventRequest{Type: tlog.TypeArtifactRetentionDeleted, SubjectDigest: e.Digest, Details: d,
		Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED})
	if err != nil {
		return fmt.Errorf("%w: log %s of %s@%s: %v (deleted; the event is logged by the next run)", ErrUnavailable, tlog.TypeArtifactRetentionDeleted, it.Name, it.Version, err)
	}
	return nil
}

func journalName(digest string) string {
	sum := sha256.Sum256([]byte(digest))
	return hex.EncodeToString(sum[:16]) + ".json"
}

func (r *Runner) writeJournal(e *entry) error {
	b, _ := json.Marshal(e)
	tmp, err := os.CreateTemp(r.journal, ".tmp-*")
	if err != nil {
		return fmt.Errorf("retention journal: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(r.journal, journalName(e.Digest)))
	}
	if err == nil {
		var d *os.File
		if d, err = os.Open(r.journal); err == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("retention journal: %w", err)
	}
	r.track(e)
	return nil
}

// Loop runs the policy every interval until ctx is done; a failed run is
// logged and tried again at the next tick. Deletions left in the journal
// (a purge the broker did not accept, an event the catalog did not log,
// a crash before the start) are retried apart from the tick: Recover with
// events after 5 s, doubling up to the lower of interval and 5 min, with
// jitter, until the journal is empty. A retry never overlaps a run: it
// takes the run lock, and waits again while a RunRetention holds it.
func (r *Runner) Loop(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	ceiling := min(interval, retryMax)
	failed := 0 // retries in a row that left the journal
	var retry <-chan time.Time
	schedule := func() {
		switch {
		case r.pending() == 0:
			failed, retry = 0, nil
		case retry == nil:
			retry = r.after(r.backoff(failed, ceiling))
		}
	}
	schedule()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.left:
		case <-t.C:
			res, err := r.Run(ctx, false)
			switch {
			case errors.Is(err, ErrBusy):
			case err != nil:
				r.logger.ErrorContext(ctx, "retention run", slog.Any("error", err))
			default:
				r.logger.InfoContext(ctx, "retention run", slog.Int("deleted", len(res.Deleted)), slog.Int("kept", len(res.Kept)))
			}
		case <-retry:
			retry = nil
			err := r.retry(ctx)
			switch {
			case errors.Is(err, ErrBusy):
				// A run holds the lock and finishes the journal itself;
				// look again after the same wait.
			case err != nil:
				failed++
				_, oldest := r.PendingPurges()
				r.logger.WarnContext(ctx, "retention journal retry", slog.Int("attempt", failed), slog.Int("journalled", r.pending()),
					slog.Time("oldest_pending_purge", oldest), slog.Any("error", err))
			case r.pending() == 0:
				r.logger.InfoContext(ctx, "retention journal finished", slog.Int("retries", failed+1))
			}
		}
		schedule()
	}
}

// retry finishes the journal, as a run would first, unless a run is under
// way (ErrBusy).
func (r *Runner) retry(ctx context.Context) error {
	if !r.run.TryLock() {
		return ErrBusy
	}
	defer r.run.Unlock()
	return r.Recover(ctx, true)
}

// backoff is the wait before a retry after failed failed retries in a row
// (libs/backoff's policy, from retryMin up to ceiling).
func (r *Runner) backoff(failed int, ceiling time.Duration) time.Duration {
	return backoff.Policy{Min: retryMin, Max: ceiling, Jitter: r.jitter}.Delay(failed + 1)
}

// BindStored runs bind (an upload's binding of digest) only if digest's
// blob is still stored, excluding deletions meanwhile. An upload of bytes
// that a run has just destroyed is told to upload again.
func (r *Runner) BindStored(ctx context.Context, digest string, bind func() error) error {
	r.bind.RLock()
	defer r.bind.RUnlock()
	if _, err := r.blobs.Locate(ctx, digest); errors.Is(err, sealed.ErrNotFound) {
		return fmt.Errorf("%w: %s was deleted by retention while it was uploaded: upload it again", sealed.ErrUnavailable, digest)
	} else if err != nil {
		return err
	}
	return bind()
}

// Exclusive runs fn with uploads' bind step excluded, as a deletion does.
func (r *Runner) Exclusive(fn func() error) error {
	r.bind.Lock()
	defer r.bind.Unlock()
	return fn()
}
