package lifecycle

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
)

// Draft returns the next trust-root version, unsigned: every key version
// with the status it will have once published (the newest version of each
// key that is not revoked becomes active), the log keys and the edge token
// keys. Root keys and threshold are the current root's, or the development
// root keys; for a first root outside development they are empty and the
// ceremony fills them in.
func (m *Manager) Draft(ctx context.Context) (*trustroot.Root, error) {
	now := m.cfg.Now().UTC().Truncate(time.Second)
	r := &trustroot.Root{Type: trustroot.TypeV1, Version: 1, Expires: now.Add(m.cfg.RootTTL), EdgeTokenKeys: m.cfg.EdgeTokenKeys}
	m.mu.Lock()
	cur := m.root
	m.mu.Unlock()
	switch {
	case cur != nil:
		r.Version, r.Threshold, r.RootKeys = cur.Version+1, cur.Threshold, cur.RootKeys
	case len(m.cfg.DevRootKeys) > 0:
		r.Threshold = m.cfg.DevThreshold
		for _, s := range m.cfg.DevRootKeys {
			k, err := trustroot.PublicKey(s)
			if err != nil {
				return nil, err
			}
			r.RootKeys = append(r.RootKeys, k)
		}
	}
	if r.EdgeTokenKeys == nil {
		r.EdgeTokenKeys = []trustroot.EdgeTokenKey{}
	}
	r.LogKeys = []trustroot.LogKey{}
	if m.cfg.LogKeys != nil {
		lk, err := m.cfg.LogKeys(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: log checkpoint key: %v", ErrUnavailable, err)
		}
		r.LogKeys = lk
	}
	r.SigningKeys = []trustroot.SigningKey{}
	for _, name := range m.names() {
		infos, err := m.versions(ctx, name)
		if err != nil {
			return nil, err
		}
		newest := -1
		for i, in := range infos {
			if in.Status != StatusRevoked {
				newest = i
			}
		}
		for i, in := range infos {
			sk := trustroot.SigningKey{
				Key:     trustroot.Key{ID: in.ID, Algorithm: in.Algorithm, PublicKey: in.PublicDER},
				Purpose: in.Purpose, Name: name, Version: in.Version.Version, Channels: in.Channels,
				ValidFrom: in.ValidFrom.UTC(), RevokedAt: in.RevokedAt,
			}
			switch {
			case in.Status == StatusRevoked:
				sk.Status = trustroot.StatusRevoked
				sk.ValidUntil = in.ValidUntil
			case i == newest:
				sk.Status = trustroot.StatusActive
			default:
				sk.Status = trustroot.StatusRetired
				until := in.ValidUntil
				if until == nil {
					// Retired by this root: it signs until it is published.
					t := now.Add(retireGrace)
					until = &t
				}
				if !until.After(sk.ValidFrom) {
					// The back end's clock is ahead of ours.
					t := sk.ValidFrom.Add(retireGrace)
					until = &t
				}
				sk.ValidUntil = until
			}
			r.SigningKeys = append(r.SigningKeys, sk)
		}
	}
	return r, nil
}

// Roots returns the published root envelopes after version after, oldest
// first; after 0 returns only the newest.
func (m *Manager) Roots(after int64) [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.roots) == 0 {
		return nil
	}
	if after <= 0 {
		return [][]byte{m.roots[len(m.roots)-1]}
	}
	if after >= int64(len(m.roots)) {
		return nil
	}
	return slices.Clone(m.roots[after:])
}

// Publish accepts a signed trust-root version. The first must be signed by
// its own threshold; later ones must chain (trustroot.Trusted.Update). A
// root that lists a version the signer has revoked as anything but revoked
// is refused: publishing must never undo a revocation.
func (m *Manager) Publish(ctx context.Context, env []byte, caller string) (int64, error) {
	m.publishMu.Lock()
	defer m.publishMu.Unlock()
	return m.publishLocked(ctx, env, caller, false)
}

// publishLocked publishes env; with queueOnly its event goes to the outbox
// without trying the log (at start, before the catalog is up).
func (m *Manager) publishLocked(ctx context.Context, env []byte, caller string, queueOnly bool) (int64, error) {
	r, err := trustroot.Parse(env)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	m.mu.Lock()
	for id, vst := range m.st.Versions {
		if vst.RevokedAt == nil {
			continue
		}
		if sk, ok := r.SigningKey(id); ok && (sk.Status != trustroot.StatusRevoked || sk.RevokedAt == nil || sk.RevokedAt.After(*vst.RevokedAt)) {
			m.mu.Unlock()
			return 0, fmt.Errorf("%w: trust root version %d lists %s version %d (%s) as %s, but the signer revoked it at %s: draft again (custody trustroot draft)",
				ErrPrecondition, r.Version, vst.Name, vst.Version, id, sk.Status, vst.RevokedAt.Format(time.RFC3339))
		}
	}
	t := m.trusted
	m.mu.Unlock()
	now := m.cfg.Now()
	if t == nil {
		nt, err := trustroot.Pin(env)
		if err != nil {
			return 0, fmt.Errorf("%w: first trust root: %v", ErrPrecondition, err)
		}
		if r.Version != 1 {
			return 0, fmt.Errorf("%w: the first trust root must be version 1, this is %d", ErrPrecondition, r.Version)
		}
		if _, err := nt.Current(now); err != nil {
			return 0, fmt.Errorf("%w: %v", ErrPrecondition, err)
		}
		t = nt
	} else if r.Version <= t.Version() {
		m.mu.Lock()
		stored := m.roots[r.Version-1]
		m.mu.Unlock()
		if bytes.Equal(stored, env) {
			return r.Version, nil // published already
		}
		return 0, fmt.Errorf("%w: trust root version %d is not newer than the published version %d (rollback): draft the next version", ErrPrecondition, r.Version, t.Version())
	} else {
		// Update a copy: the live chain moves only once the root is stored.
		nt, err := trustroot.Pin(t.Envelope())
		if err != nil {
			return 0, fmt.Errorf("re-pin trust root version %d: %w", t.Version(), err)
		}
		if err := nt.Update(env, now); err != nil {
			return 0, fmt.Errorf("%w: trust root version %d: %v", ErrPrecondition, r.Version, err)
		}
		t = nt
	}
	if err := m.files.saveRoot(r.Version, env); err != nil {
		return 0, fmt.Errorf("%w: store trust root: %v", ErrUnavailable, err)
	}
	m.mu.Lock()
	m.trusted = t
	m.roots = append(m.roots, env)
	m.root = r
	// A version this root retires stopped signing when the root was
	// drafted; keep the window the root published.
	for _, sk := range r.SigningKeys {
		if vst := m.st.Versions[sk.ID]; vst != nil && vst.RetiredAt == nil && sk.Status == trustroot.StatusRetired && sk.ValidUntil != nil {
			t := sk.ValidUntil.Add(-retireGrace)
			vst.RetiredAt = &t
		}
	}
	serr := m.files.saveState(m.st)
	m.mu.Unlock()
	if serr != nil {
		m.cfg.Logger.ErrorContext(ctx, "record retired key versions", slog.Any("error", serr))
	}
	m.cfg.Logger.InfoContext(ctx, "trust root published", slog.Int64("version", r.Version), slog.Time("expires", r.Expires), slog.String("caller", caller))
	details := map[string]any{"version": r.Version, "expires": r.Expires.Format(time.RFC3339), "by": caller}
	if queueOnly {
		m.enqueue(ctx, tlog.TypeTrustRootPublished, details)
	} else if err := m.audit(ctx, tlog.TypeTrustRootPublished, details, true); err != nil {
		// Published: it stays so; the outbox logs it later.
		m.cfg.Logger.WarnContext(ctx, "trust root published; its event is queued until the log is back", slog.Int64("version", r.Version), slog.Any("error", err))
	}
	return r.Version, nil
}

// autoPublish signs and publishes a new root with the development root keys,
// if there are any and the keys changed. It returns the version published, or
// 0.
func (m *Manager) autoPublish(ctx context.Context, queueOnly bool) (int64, error) {
	if len(m.cfg.DevRootKeys) == 0 {
		return 0, nil
	}
	m.publishMu.Lock()
	defer m.publishMu.Unlock()
	draft, err := m.Draft(ctx)
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	cur := m.root
	m.mu.Unlock()
	if cur != nil && sameKeys(cur, draft) && cur.Expires.Sub(m.cfg.Now()) > m.cfg.RootTTL/2 {
		return 0, nil
	}
	unsigned, err := draft.Marshal()
	if err != nil {
		return 0, err
	}
	env := unsigned
	for _, s := range m.cfg.DevRootKeys {
		if env, err = trustroot.Sign(env, s); err != nil {
			return 0, fmt.Errorf("sign development trust root: %w", err)
		}
	}
	return m.publishLocked(ctx, env, "dev", queueOnly)
}

// EnsureRoot publishes a first or refreshed root in development; outside
// development it only reports whether a root is published.
func (m *Manager) EnsureRoot(ctx context.Context) (int64, error) {
	if _, err := m.autoPublish(ctx, true); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.root; r != nil {
		return r.Version, nil
	}
	return 0, nil
}

// sameKeys reports whether two roots list the same keys with the same
// statuses, ignoring version and expiry.
func sameKeys(a, b *trustroot.Root) bool {
	strip := func(r *trustroot.Root) []byte {
		c := *r
		c.Version, c.Expires = 0, time.Time{}
		// A retired key's window end is set when it is first drafted;
		// compare it only by presence.
		c.SigningKeys = nil
		for _, k := range r.SigningKeys {
			if k.Status == trustroot.StatusRetired {
				k.ValidUntil = nil
			}
			c.SigningKeys = append(c.SigningKeys, k)
		}
		b, _ := json.Marshal(c)
		return b
	}
	return bytes.Equal(strip(a), strip(b))
}
