// Package edgekeys follows the edge token keys of the signed trust root: the
// pinned root, moved forward to the signer's newer versions (edges verify tokens
// with them; the broker checks the key it signs with is among them).
package edgekeys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/custody-dev/custody/libs/trustroot"
)

// DefaultRefreshInterval is how often Run asks the signer for newer roots.
const DefaultRefreshInterval = 30 * time.Second

// fetchTimeout bounds one refresh, so that a hung signer cannot hold up
// the next one.
const fetchTimeout = 10 * time.Second

// ErrNoKeys means the edge cannot verify any token: its trust root lists no
// edge token key, or has expired. Every token is refused (fail closed).
var ErrNoKeys = errors.New("no edge token keys")

// Keys are the edge token keys of the newest trust root accepted. It is
// safe for concurrent use.
type Keys struct {
	root     *trustroot.Trusted
	src      trustroot.Source
	logger   *slog.Logger
	interval time.Duration
	now      func() time.Time
	after    func(context.Context)
}

// Config configures New.
type Config struct {
	// Root is the pinned trust root, moved forward by Run.
	Root *trustroot.Trusted
	// Source gives newer roots (the signer's GetTrustRoot).
	Source trustroot.Source
	Logger *slog.Logger
	// Interval between refreshes; DefaultRefreshInterval if zero.
	Interval time.Duration
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// AfterRefresh, if set, is called by Run after each refresh, whether
	// it succeeded or not (the broker checks its signing key is still
	// listed).
	AfterRefresh func(context.Context)
}

// New returns Keys over cfg.Root. It does not contact the source: call
// Refresh (at start) and Run.
func New(cfg Config) *Keys {
	k := &Keys{root: cfg.Root, src: cfg.Source, logger: cfg.Logger, interval: cfg.Interval, now: cfg.Now, after: cfg.AfterRefresh}
	if k.interval <= 0 {
		k.interval = DefaultRefreshInterval
	}
	if k.now == nil {
		k.now = time.Now
	}
	return k
}

// TokenKeys returns the current root's edge token keys sorted by whether
// their validity window holds now: Valid verify tokens (a key rotated out
// stays for its transition window, and not after), Outside are listed but
// refused at now. It fails with ErrNoKeys if the root expired or lists no
// edge token key at all; Valid may be empty if every listed key is outside
// its window.
func (k *Keys) TokenKeys(now time.Time) (trustroot.EdgeTokenKeySet, error) {
	r, err := k.root.Current(now)
	if err != nil {
		return trustroot.EdgeTokenKeySet{}, fmt.Errorf("%w: %v", ErrNoKeys, err)
	}
	if len(r.EdgeTokenKeys) == 0 {
		return trustroot.EdgeTokenKeySet{}, fmt.Errorf("%w: trust root v%d lists none: list the cdn-broker's token key in the signer (--edge-token-public-key-file) and publish a new root", ErrNoKeys, r.Version)
	}
	return r.EdgeTokenKeysAt(now), nil
}

// Version is the version of the trust root in use.
func (k *Keys) Version() int64 { return k.root.Version() }

// Refresh asks the source for newer roots once and logs what changed. An
// error leaves the current root in use (until it expires).
func (k *Keys) Refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	from, to, err := k.root.Refresh(ctx, k.src, k.now())
	if to != from {
		r, _ := k.root.Current(k.now())
		n := 0
		if r != nil {
			n = len(r.EdgeTokenKeys)
		}
		k.logger.InfoContext(ctx, "trust root updated", slog.Int64("from_version", from), slog.Int64("version", to), slog.Int("edge_token_keys", n))
	}
	if err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	return nil
}

// Run refreshes every interval until ctx ends, logging failures; it returns
// nil then.
func (k *Keys) Run(ctx context.Context) error {
	tick := time.NewTicker(k.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := k.Refresh(ctx); err != nil && ctx.Err() == nil {
				k.logger.WarnContext(ctx, "trust refresh failed: keeping the current trust root", slog.Int64("version", k.root.Version()), slog.Any("error", err))
			}
			if k.after != nil && ctx.Err() == nil {
				k.after(ctx)
			}
		}
	}
}
