package admission

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/custody-dev/custody/libs/batch"
	"github.com/custody-dev/custody/libs/trustroot"
)

// TrustRefreshInterval is how often RunTrustRefresh asks the signer for
// newer trust roots and revocations.
const TrustRefreshInterval = 30 * time.Second

// fetchTimeout bounds one refresh, so that a hung signer cannot hold up
// start-up or the admissions waiting on a refresh.
const fetchTimeout = 10 * time.Second

// trust is what the gatekeeper trusts: the newest signed trust root it
// accepted, walking forward from the pinned one, and the revocations the
// signer reports live. New keys only ever come from a signed root; the
// signer's live answer is used only for revocations, which can only narrow
// trust, so that a revocation takes effect before the next root is signed.
type trust struct {
	signer Signer
	root   *trustroot.Trusted
	now    func() time.Time
	logger *slog.Logger
	// syncs coalesces the syncs of concurrent admissions.
	syncs *batch.Queue[struct{}, struct{}]

	mu sync.RWMutex
	// revoked maps key ids to the earliest revocation time the signer
	// reported. Entries are never removed: a revocation is final.
	revoked map[string]time.Time
	// checked is when the signer last answered for revocations.
	checked time.Time
	// epoch is the revocation epoch: the latest time at which a revocation
	// took effect or, if later, became known to this process. A revocation
	// backdated with --effective is known only when it is recorded, and
	// decisions made before that moment must be refused too.
	epoch time.Time
}

func newTrust(s Signer, root *trustroot.Trusted, now func() time.Time, logger *slog.Logger) *trust {
	t := &trust{signer: s, root: root, now: now, logger: logger, revoked: map[string]time.Time{}}
	// One sync in flight: an admission arriving while one is out joins the
	// next, which leaves when it returns, so it starts after the admission.
	t.syncs = batch.New(1, maxSyncBatch, t.syncBatch)
	return t
}

// current returns the trust root to verify with, or an error naming its
// expiry if it expired (a freeze: every admission is denied).
func (t *trust) current() (*trustroot.Root, error) {
	return t.root.Current(t.now())
}

// revokedAt returns when the signer reported key id revoked.
func (t *trust) revokedAt(id string) (time.Time, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	at, ok := t.revoked[id]
	return at, ok
}

// refresh asks the signer for the trust roots after the current one and
// for revocations. Roots that do not chain (rollback, gap, bad signatures,
// expired) are refused and the current root stays. Errors are for logging:
// the current root is still signed and, until it expires, still usable.
func (t *trust) refresh(ctx context.Context) error {
	rootErr, revErr := t.fetch(ctx)
	return errors.Join(rootErr, revErr)
}

// sync is refresh before an admission: a root the signer cannot give or
// that does not chain leaves the current root in use (logged); revocations
// the signer cannot give are an error: the caller must not decide without
// them. Concurrent admissions share one round trip to the signer, but
// never one that started before they called: a revocation the signer
// recorded before sync was called is always seen (decision 0086).
func (t *trust) sync(ctx context.Context) error {
	_, err := t.syncs.Do(ctx, struct{}{})
	return err
}

// syncBatch is one sync for every admission waiting on it.
func (t *trust) syncBatch(ctx context.Context, waiting []struct{}) ([]struct{}, error) {
	rootErr, revErr := t.fetch(ctx)
	if rootErr != nil {
		t.logger.WarnContext(ctx, "trust roots not updated", slog.Int64("version", t.root.Version()), slog.Any("error", rootErr))
	}
	if revErr != nil {
		return nil, fmt.Errorf("%w: check the signer is running", revErr)
	}
	return make([]struct{}, len(waiting)), nil
}

// maxSyncBatch bounds the admissions one sync serves; more wait for the
// next.
const maxSyncBatch = 4096

// fetch takes the signer's newer roots and its revocations. Concurrent
// fetches are safe: Trusted skips versions it already holds.
func (t *trust) fetch(ctx context.Context) (rootErr, revErr error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	before, v, err := t.root.Refresh(ctx, t.signer, t.now())
	if err != nil {
		rootErr = fmt.Errorf("signer: %w", err)
	}
	if v != before {
		t.logger.InfoContext(ctx, "trust root updated", slog.Int64("from_version", before), slog.Int64("version", v))
	}
	return rootErr, t.fetchRevocations(ctx)
}

func (t *trust) fetchRevocations(ctx context.Context) error {
	asked := t.now()
	revoked, err := t.signer.Revocations(ctx)
	if err != nil {
		return fmt.Errorf("get key revocations from the signer: %w", err)
	}
	t.mu.Lock()
	first := t.checked.IsZero()
	t.mu.Unlock()
	added := t.addRevocations(ctx, revoked)
	t.mu.Lock()
	for _, at := range added {
		// Revocations present at the first answer after start are taken at
		// their own time; later ones at least from when they were learned.
		if !first && asked.After(at) {
			at = asked
		}
		if at.After(t.epoch) {
			t.epoch = at
		}
	}
	if asked.After(t.checked) {
		t.checked = asked
	}
	t.mu.Unlock()
	return nil
}

// addRevocations records revocations not seen yet (or seen with a later
// time) and returns their times.
func (t *trust) addRevocations(ctx context.Context, revoked map[string]time.Time) []time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	var added []time.Time
	for id, at := range revoked {
		if old, ok := t.revoked[id]; ok && !at.Before(old) {
			continue
		}
		t.revoked[id] = at
		added = append(added, at)
		t.logger.InfoContext(ctx, "key revocation received from the signer", slog.String("key_id", id), slog.Time("revoked_at", at))
	}
	return added
}

// RefreshTrust asks the signer for newer trust roots and revocations now.
// An error (signer down, a root refused) leaves the current trust root in
// use; it is for logging.
func (g *Gate) RefreshTrust(ctx context.Context) error {
	return g.trust.refresh(ctx)
}

// RunTrustRefresh refreshes the trust every TrustRefreshInterval until ctx
// ends, logging failures. It returns nil when ctx ends.
func (g *Gate) RunTrustRefresh(ctx context.Context) error {
	tick := time.NewTicker(TrustRefreshInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := g.trust.refresh(ctx); err != nil && ctx.Err() == nil {
				g.cfg.Logger.WarnContext(ctx, "trust refresh failed: keeping the current trust root", slog.Int64("version", g.trust.root.Version()), slog.Any("error", err))
			}
		}
	}
}

// RevocationWatchInterval is how often RunRevocationWatch asks the signer
// for revocations, so that the revocation epoch reaches the broker and
// edges within seconds.
const RevocationWatchInterval = time.Second

// Revocations returns the revocation epoch (zero if no key was revoked):
// the latest time at which a key revocation took effect or, if later, this
// gatekeeper learned it from the signer; and when the signer last answered
// (zero if never).
func (g *Gate) Revocations() (epoch, checked time.Time) {
	t := g.trust
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.epoch, t.checked
}

// RunRevocationWatch asks the signer for revocations every
// RevocationWatchInterval until ctx ends; it returns nil then.
func (g *Gate) RunRevocationWatch(ctx context.Context) error {
	tick := time.NewTicker(RevocationWatchInterval)
	defer tick.Stop()
	failing := false
	for {
		fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
		err := g.trust.fetchRevocations(fctx)
		cancel()
		if err != nil && !failing && ctx.Err() == nil {
			g.cfg.Logger.WarnContext(ctx, "cannot learn key revocations: GetStopState fails closed until the signer answers", slog.Any("error", err))
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// TrustVersion returns the version of the trust root in use.
func (g *Gate) TrustVersion() int64 { return g.trust.root.Version() }

// TrustRoot returns the trust root admissions verify with now, or why
// there is none usable (expired): loghead opens the log's checkpoints with
// its log keys.
func (g *Gate) TrustRoot() (*trustroot.Root, error) { return g.trust.current() }
