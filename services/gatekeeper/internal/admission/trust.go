package admission

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

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
	// minInterval spaces refreshes asked for by an envelope naming an
	// unknown key, so that junk envelopes cannot hammer the signer.
	minInterval time.Duration

	// sem is held while refreshing; a channel so that waiters can give up
	// when their context ends.
	sem chan struct{}
	// last is when the last refresh started; guarded by sem.
	last time.Time

	mu sync.RWMutex
	// revoked maps key ids to the earliest revocation time the signer
	// reported. Entries are never removed: a revocation is final.
	revoked map[string]time.Time
}

func newTrust(s Signer, root *trustroot.Trusted, now func() time.Time, minInterval time.Duration, logger *slog.Logger) *trust {
	return &trust{signer: s, root: root, now: now, minInterval: minInterval, logger: logger,
		sem: make(chan struct{}, 1), revoked: map[string]time.Time{}}
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
	if err := t.lock(ctx); err != nil {
		return err
	}
	defer t.unlock()
	return t.fetch(ctx)
}

// refreshSoon refreshes unless a refresh started less than minInterval
// ago; concurrent callers share one refresh. It reports whether the trust
// root's version changed.
func (t *trust) refreshSoon(ctx context.Context) bool {
	before := t.root.Version()
	if err := t.lock(ctx); err != nil {
		return false
	}
	defer t.unlock()
	if t.root.Version() != before {
		return true // refreshed while we waited
	}
	if !t.last.IsZero() && t.now().Sub(t.last) < t.minInterval {
		return false
	}
	if err := t.fetch(ctx); err != nil {
		t.logger.WarnContext(ctx, "trust refresh for an unknown key failed", slog.Any("error", err))
	}
	return t.root.Version() != before
}

func (t *trust) lock(ctx context.Context) error {
	select {
	case t.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the trust refresh: %w", ctx.Err())
	}
}

func (t *trust) unlock() { <-t.sem }

// fetch does the refresh; the caller holds sem.
func (t *trust) fetch(ctx context.Context) error {
	t.last = t.now()
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	var errs []error
	before := t.root.Version()
	roots, err := t.signer.TrustRoots(ctx, before)
	if err != nil {
		errs = append(errs, fmt.Errorf("get trust roots after v%d from the signer: %w", before, err))
	} else if err := t.root.UpdateChain(roots, t.now()); err != nil {
		errs = append(errs, fmt.Errorf("refusing the signer's trust roots, staying on v%d: %w", t.root.Version(), err))
	}
	if v := t.root.Version(); v != before {
		t.logger.InfoContext(ctx, "trust root updated", slog.Int64("from_version", before), slog.Int64("version", v))
	}
	revoked, err := t.signer.Revocations(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("get revocations from the signer: %w", err))
	} else {
		t.addRevocations(ctx, revoked)
	}
	return errors.Join(errs...)
}

// sync takes the signer's newer trust roots and its revocations now. A
// root the signer cannot give or that does not chain leaves the current
// root in use (logged); revocations the signer cannot give are an error:
// the caller must not decide without them.
func (t *trust) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	before := t.root.Version()
	if roots, err := t.signer.TrustRoots(ctx, before); err != nil {
		t.logger.WarnContext(ctx, "get newer trust roots from the signer", slog.Int64("version", before), slog.Any("error", err))
	} else if len(roots) > 0 {
		if err := t.root.UpdateChain(roots, t.now()); err != nil {
			t.logger.ErrorContext(ctx, "refusing the signer's trust roots", slog.Int64("version", t.root.Version()), slog.Any("error", err))
		} else if v := t.root.Version(); v != before {
			t.logger.InfoContext(ctx, "trust root updated", slog.Int64("from_version", before), slog.Int64("version", v))
		}
	}
	revoked, err := t.signer.Revocations(ctx)
	if err != nil {
		return fmt.Errorf("get key revocations from the signer: %w: check the signer is running", err)
	}
	t.addRevocations(ctx, revoked)
	return nil
}

func (t *trust) addRevocations(ctx context.Context, revoked map[string]time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, at := range revoked {
		if old, ok := t.revoked[id]; ok && !at.Before(old) {
			continue
		}
		t.revoked[id] = at
		t.logger.InfoContext(ctx, "key revocation received from the signer", slog.String("key_id", id), slog.Time("revoked_at", at))
	}
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

// TrustVersion returns the version of the trust root in use.
func (g *Gate) TrustVersion() int64 { return g.trust.root.Version() }
