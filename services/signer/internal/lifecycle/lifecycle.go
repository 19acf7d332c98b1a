// Package lifecycle is the signer's key lifecycle: which key signs each
// channel, which version of it signs now, rotation, revocation, re-signing
// and the trust root that publishes all of it to verifiers.
//
// A key version signs only once a published trust root lists it as active,
// so nothing is signed that verifiers cannot check. A revoked version never
// signs again, from the moment it is revoked.
package lifecycle

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/backoff"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/services/signer/internal/audit"
	"github.com/custody-dev/custody/services/signer/internal/keys"
)

// Errors the handlers map to status codes.
var (
	// ErrInvalid: a bad argument.
	ErrInvalid = errors.New("invalid key request")
	// ErrNotFound: no such key or version.
	ErrNotFound = errors.New("no such key")
	// ErrPrecondition: the request is valid but the keys are not in a state
	// that allows it (no usable version, a root that does not chain).
	ErrPrecondition = errors.New("not possible in the current key state")
	// ErrUnavailable: the key back end or the audit log is down.
	ErrUnavailable = errors.New("unavailable")
)

// Status of a key version.
const (
	StatusCurrent = "current"
	StatusPending = "pending"
	StatusRetired = "retired"
	StatusRevoked = "revoked"
)

// retireGrace is how long after a version stops signing its signatures may
// still reach the log (a signature made just before a rotation is logged
// just after it).
const retireGrace = 10 * time.Minute

// currentTTL is how long the back end's list of a key's versions is cached;
// a rotation made in the back end by a custodian is picked up within it.
const currentTTL = 5 * time.Second

// Auditor appends audit events to the transparency log.
type Auditor interface {
	Log(ctx context.Context, e audit.Event) error
}

// Config configures a Manager.
type Config struct {
	Backend keys.Backend
	// ArtifactKey signs the artifacts of every channel without a key of its
	// own in ChannelKeys.
	ArtifactKey string
	ChannelKeys map[string]string
	DecisionKey string
	// BackupKey signs backup-set manifests; empty for none.
	BackupKey string
	// Dir holds keys.json and the published trust roots.
	Dir    string
	Audit  Auditor
	Logger *slog.Logger
	Now    func() time.Time
	// RootTTL is how long a drafted trust root is valid.
	RootTTL time.Duration
	// EdgeTokenKeys are listed in every drafted root, each with the window
	// in which edges accept its tokens.
	EdgeTokenKeys []trustroot.EdgeTokenKey
	// LogKeys returns the log checkpoint keys to list; nil lists none.
	LogKeys func(ctx context.Context) ([]trustroot.LogKey, error)
	// DevRootKeys, in development only, let the manager sign and publish a
	// new root itself after every change, with DevThreshold.
	DevRootKeys  []crypto.Signer
	DevThreshold int
	// Purge, if set, asks the cdn-broker to purge from every cache the
	// artifacts key version keyID signed from effective on, under
	// reference (idempotent per reference), and returns how many. A
	// revocation's purge is recorded with the revocation and asked for
	// until Purge succeeds; nil: caches are left to expire.
	Purge func(ctx context.Context, keyID string, effective time.Time, reference string) (int, error)
	// After is the timer Run waits on between refused purges; nil:
	// time.After.
	After func(time.Duration) <-chan time.Time
	// Jitter returns a number in [0, 1) for the purge backoff; nil:
	// math/rand/v2.
	Jitter func() float64
}

// Manager implements the key lifecycle. It is safe for concurrent use.
type Manager struct {
	cfg   Config
	files files

	mu      sync.Mutex // guards st, roots, root, trusted, listed
	st      *state
	roots   [][]byte        // published envelopes, oldest first: roots[i] is version i+1
	root    *trustroot.Root // the newest of roots, parsed; nil if none
	trusted *trustroot.Trusted
	listed  map[string]cachedList // the back end's versions, by key name

	publishMu sync.Mutex // one draft-sign-publish at a time
	flushMu   sync.Mutex // one outbox flush at a time
	purgeMu   sync.Mutex // one pass over pending purges at a time
	// purgeRefused tells Run that a purge Revoke asked for at once was
	// refused, so Run asks again with backoff.
	purgeRefused chan struct{}
}

type cachedList struct {
	vs      []keys.Version
	fetched time.Time
}

// Open loads the lifecycle state from cfg.Dir. A corrupt state file or a
// stored root chain that does not verify is an error: the signer must not
// forget revocations or trust a root it cannot check.
func Open(cfg Config) (*Manager, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RootTTL <= 0 {
		cfg.RootTTL = 365 * 24 * time.Hour
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	m := &Manager{cfg: cfg, files: files{cfg.Dir}, listed: map[string]cachedList{}, purgeRefused: make(chan struct{}, 1)}
	st, err := m.files.loadState()
	if err != nil {
		return nil, err
	}
	m.st = st
	roots, err := m.files.loadRoots()
	if err != nil {
		return nil, err
	}
	if len(roots) > 0 {
		t, err := trustroot.Pin(roots[0])
		if err != nil {
			return nil, fmt.Errorf("stored trust root %s does not verify: %w", m.files.rootPath(1), err)
		}
		for i, env := range roots[1:] {
			// Expiry is checked when the root is used, not here: an old
			// version that has expired since is still part of the chain.
			r, perr := trustroot.Parse(env)
			at := cfg.Now()
			if perr == nil {
				at = r.Expires.Add(-time.Second)
			}
			if err := t.Update(env, at); err != nil {
				return nil, fmt.Errorf("stored trust root number %d does not chain from the one before: %w", i+2, err)
			}
		}
		m.trusted = t
		if m.root, err = trustroot.Parse(roots[len(roots)-1]); err != nil {
			return nil, err
		}
	}
	m.roots = roots
	return m, nil
}

// ArtifactKey names the key that signs channel's artifacts.
func (m *Manager) ArtifactKey(channel string) string {
	if k, ok := m.cfg.ChannelKeys[channel]; ok {
		return k
	}
	return m.cfg.ArtifactKey
}

// DecisionKey names the key that signs decision records.
func (m *Manager) DecisionKey() string { return m.cfg.DecisionKey }

// BackupKey names the key that signs backup-set manifests; empty if the
// signer has none.
func (m *Manager) BackupKey() string { return m.cfg.BackupKey }

// names is every key the manager looks after, artifact keys first.
func (m *Manager) names() []string {
	set := map[string]bool{m.cfg.ArtifactKey: true}
	for _, k := range m.cfg.ChannelKeys {
		set[k] = true
	}
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	out = append(out, m.cfg.DecisionKey)
	if m.cfg.BackupKey != "" {
		out = append(out, m.cfg.BackupKey)
	}
	return out
}

func (m *Manager) purpose(name string) string {
	if name == m.cfg.DecisionKey {
		return attest.PurposeDecision
	}
	if name == m.cfg.BackupKey && name != "" {
		return attest.PurposeBackup
	}
	return attest.PurposeArtifact
}

// channels lists the channels a key signs for; nil for the default artifact
// key, which signs every channel that no other key names.
func (m *Manager) channels(name string) []string {
	if name == m.cfg.ArtifactKey || name == m.cfg.DecisionKey || name == m.cfg.BackupKey {
		return nil
	}
	var out []string
	for ch, k := range m.cfg.ChannelKeys {
		if k == name {
			out = append(out, ch)
		}
	}
	sort.Strings(out)
	return out
}

// Info is one key version with its lifecycle status.
type Info struct {
	keys.Version
	Purpose    string
	Status     string
	Channels   []string
	ValidFrom  time.Time
	ValidUntil *time.Time
	RevokedAt  *time.Time
	Reason     string
}

// versions lists key name's versions with their status as the published root
// and the local state make them.
func (m *Manager) versions(ctx context.Context, name string) ([]Info, error) {
	vs, err := m.backendVersions(ctx, name)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	root := m.root
	changed := false
	cur := -1
	for i := len(vs) - 1; i >= 0; i-- {
		v := vs[i]
		if vst := m.st.Versions[v.ID]; vst != nil && vst.RevokedAt != nil {
			continue
		}
		if root == nil {
			cur = i
			break
		}
		if sk, ok := root.SigningKey(v.ID); ok && sk.Status == trustroot.StatusActive {
			cur = i
			break
		}
	}
	out := make([]Info, len(vs))
	now := m.cfg.Now()
	for i, v := range vs {
		vst := m.st.Versions[v.ID]
		if vst == nil {
			vst = &versionState{Name: name, Version: v.Version, FirstSeen: now}
			m.st.Versions[v.ID] = vst
			changed = true
		}
		info := Info{Version: v, Purpose: m.purpose(name), Channels: m.channels(name), ValidFrom: v.Created}
		if info.ValidFrom.IsZero() {
			info.ValidFrom = vst.FirstSeen
		}
		switch {
		case vst.RevokedAt != nil:
			info.Status, info.RevokedAt, info.Reason = StatusRevoked, vst.RevokedAt, vst.Reason
		case i == cur:
			info.Status = StatusCurrent
		case i > cur:
			info.Status = StatusPending
		default:
			info.Status = StatusRetired
			if vst.RetiredAt == nil {
				t := now
				vst.RetiredAt = &t
				changed = true
			}
			until := vst.RetiredAt.Add(retireGrace)
			info.ValidUntil = &until
		}
		out[i] = info
	}
	if changed {
		if err := m.files.saveState(m.st); err != nil {
			return nil, fmt.Errorf("%w: record key versions: %v", ErrUnavailable, err)
		}
	}
	return out, nil
}

// backendVersions lists key name's versions in the back end, cached for
// currentTTL.
func (m *Manager) backendVersions(ctx context.Context, name string) ([]keys.Version, error) {
	m.mu.Lock()
	c, ok := m.listed[name]
	m.mu.Unlock()
	if ok && m.cfg.Now().Sub(c.fetched) < currentTTL {
		return c.vs, nil
	}
	vs, err := m.cfg.Backend.Versions(ctx, name)
	if err != nil {
		return nil, m.backendErr(name, err)
	}
	m.mu.Lock()
	m.listed[name] = cachedList{vs: vs, fetched: m.cfg.Now()}
	m.mu.Unlock()
	return vs, nil
}

// Current returns the version of key name that signs now: the newest
// version that the published trust root lists as active and that is not
// revoked (with no root published yet: the newest not revoked).
func (m *Manager) Current(ctx context.Context, name string) (keys.Version, error) {
	infos, err := m.versions(ctx, name)
	if err != nil {
		return keys.Version{}, err
	}
	for _, in := range infos {
		if in.Status == StatusCurrent {
			return in.Version, nil
		}
	}
	return keys.Version{}, fmt.Errorf("%w: key %q has no version that may sign: every version is revoked or not yet in a published trust root; rotate it (custody keys rotate %s) and publish a trust root that lists the new version", ErrPrecondition, name, name)
}

// forget drops the cached list of key name's versions.
func (m *Manager) forget(name string) {
	m.mu.Lock()
	delete(m.listed, name)
	m.mu.Unlock()
}

// List returns every version of every key, artifact keys first.
func (m *Manager) List(ctx context.Context) ([]Info, error) {
	var out []Info
	for _, name := range m.names() {
		infos, err := m.versions(ctx, name)
		if err != nil {
			return nil, err
		}
		out = append(out, infos...)
	}
	return out, nil
}

func (m *Manager) known(name string) bool { return slices.Contains(m.names(), name) }

// Rotate adds a version to key name. With development root keys the new
// version is published in a new trust root at once and so signs at once;
// otherwise it is pending until a signed root lists it. It returns the new
// version and the root version published (0 if none).
func (m *Manager) Rotate(ctx context.Context, name, caller string) (Info, int64, error) {
	if !keys.ValidName(name) {
		return Info{}, 0, fmt.Errorf("%w: key name %q: want 1-64 of a-z, 0-9, '-', '_', starting with a letter", ErrInvalid, quote.Prefix(name))
	}
	if !m.known(name) {
		return Info{}, 0, fmt.Errorf("%w: key %q: the signer uses %v", ErrNotFound, quote.Prefix(name), m.names())
	}
	v, err := m.cfg.Backend.Rotate(ctx, name)
	if err != nil {
		if m.cfg.Backend.Kind() == "vault" {
			// The signer's token cannot rotate by design.
			return Info{}, 0, fmt.Errorf("%w: with Vault the key custodian rotates: vault write -f transit/keys/%s/rotate; the signer sees the new version within 5 seconds, pending until a trust root lists it (%v)", ErrPrecondition, name, err)
		}
		return Info{}, 0, m.backendErr(name, err)
	}
	m.forget(name)
	auditErr := m.audit(ctx, tlog.TypeKeyRotated, map[string]any{"key": name, "version": v.Version, "key_id": v.ID, "by": caller}, true)
	rv, err := m.autoPublish(ctx, false)
	if err != nil {
		return Info{}, 0, err
	}
	if auditErr != nil {
		return Info{}, rv, fmt.Errorf("%s rotated to version %d, but the rotation is not logged yet (%w); the signer logs it as soon as the log is back", name, v.Version, auditErr)
	}
	info, err := m.info(ctx, name, v.Version)
	return info, rv, err
}

// Revoke revokes version of key name from effective (zero: now) on. An
// effective time up to a minute ahead (the caller's clock running fast) is
// stored as now; one further ahead is refused with ErrInvalid: a revocation's
// time is never in the future, so no signature made between the call and
// that time could count as made before it. The revocation takes effect in the signer before it is logged: if the log is
// down the call fails with ErrUnavailable, the revocation stands, and a
// retry logs it. Revoking again with a later time keeps the earlier one.
func (m *Manager) Revoke(ctx context.Context, name string, version int, effective time.Time, reason, caller string) (Info, int64, error) {
	now := m.cfg.Now()
	if effective.IsZero() {
		effective = now
	}
	switch {
	case !keys.ValidName(name):
		return Info{}, 0, fmt.Errorf("%w: key name %q: want 1-64 of a-z, 0-9, '-', '_', starting with a letter", ErrInvalid, quote.Prefix(name))
	case !m.known(name):
		return Info{}, 0, fmt.Errorf("%w: key %q: the signer uses %v", ErrNotFound, quote.Prefix(name), m.names())
	case reason == "":
		return Info{}, 0, fmt.Errorf("%w: a reason is required (it is logged)", ErrInvalid)
	case len(reason) > 1024:
		return Info{}, 0, fmt.Errorf("%w: reason longer than 1024 bytes", ErrInvalid)
	case effective.After(now.Add(time.Minute)):
		return Info{}, 0, fmt.Errorf("%w: effective time %s is in the future: revoke when the key must stop being trusted", ErrInvalid, effective.UTC().Format(time.RFC3339))
	case effective.After(now):
		effective = now
	}
	infos, err := m.versions(ctx, name)
	if err != nil {
		return Info{}, 0, err
	}
	i := slices.IndexFunc(infos, func(in Info) bool { return in.Version.Version == version })
	if i < 0 {
		return Info{}, 0, fmt.Errorf("%w: key %q has no version %d", ErrNotFound, name, version)
	}
	id := infos[i].ID
	m.mu.Lock()
	vst := m.st.Versions[id]
	prev := *vst
	prevPurges := m.st.Purges
	if vst.RevokedAt == nil || effective.Before(*vst.RevokedAt) {
		t := effective.UTC()
		vst.RevokedAt, vst.Reason, vst.RevokedBy = &t, reason, caller
		// The purge is recorded with the revocation, in one write: a
		// broker that is down, or a crash now, never loses it.
		if m.cfg.Purge != nil {
			if len(m.st.Purges) >= maxPurges {
				m.cfg.Logger.ErrorContext(ctx, "pending purges full: the broker has been down too long; purge this revocation by hand",
					slog.String("key_id", id), slog.Int("pending", len(m.st.Purges)))
			} else {
				m.st.Purges = append(slices.Clip(m.st.Purges), pendingPurge{KeyID: id, Effective: t, Queued: now.UTC(),
					Reference: fmt.Sprintf("key-revoked-%s-%d", id[:16], t.UnixNano())})
			}
		}
	}
	err = m.files.saveState(m.st)
	if err != nil {
		*vst = prev
		m.st.Purges = prevPurges
	}
	revokedAt := *vst.RevokedAt
	m.mu.Unlock()
	if err != nil {
		return Info{}, 0, fmt.Errorf("%w: record revocation: %v", ErrUnavailable, err)
	}
	m.cfg.Logger.WarnContext(ctx, "key version revoked", slog.String("key_name", name), slog.Int("key_version", version),
		slog.String("key_id", id), slog.Time("revoked_at", revokedAt), slog.String("caller", caller))
	auditErr := m.audit(ctx, tlog.TypeKeyRevoked, map[string]any{"key": name, "version": version, "key_id": id,
		"revoked_at": revokedAt.Format(time.RFC3339Nano), "reason": reason, "by": caller}, true)
	if m.purgePending(ctx) != nil {
		select {
		case m.purgeRefused <- struct{}{}:
		default:
		}
	}
	rv, err := m.autoPublish(ctx, false)
	if err != nil {
		return Info{}, 0, err
	}
	if auditErr != nil {
		return Info{}, rv, fmt.Errorf("the revocation is in effect in the signer but not logged yet (%w); the signer logs it as soon as the log is back", auditErr)
	}
	info, err := m.info(ctx, name, version)
	return info, rv, err
}

func (m *Manager) info(ctx context.Context, name string, version int) (Info, error) {
	infos, err := m.versions(ctx, name)
	if err != nil {
		return Info{}, err
	}
	for _, in := range infos {
		if in.Version.Version == version {
			return in, nil
		}
	}
	return Info{}, fmt.Errorf("%w: key %q has no version %d", ErrNotFound, name, version)
}

// audit logs an event. Events of actions that have not taken effect yet
// fail closed: the caller undoes nothing and reports ErrUnavailable. An
// event of an action that already took effect (queue true) is also kept in
// the outbox and logged by Run once the log is back.
func (m *Manager) audit(ctx context.Context, typ string, details map[string]any, queue bool) error {
	if m.cfg.Audit == nil {
		return nil
	}
	m.flush(ctx) // keep the log in order: older events first
	err := m.cfg.Audit.Log(ctx, audit.Event{Type: typ, Details: details})
	if err == nil {
		return nil
	}
	if queue {
		m.enqueue(ctx, typ, details)
	}
	return fmt.Errorf("%w: log %s event: %v", ErrUnavailable, typ, err)
}

// enqueue keeps an event in the outbox until Run logs it.
func (m *Manager) enqueue(ctx context.Context, typ string, details map[string]any) {
	if m.cfg.Audit == nil {
		return
	}
	b, err := json.Marshal(details)
	if err != nil {
		m.cfg.Logger.ErrorContext(ctx, "queue event", slog.String("type", typ), slog.Any("error", err))
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.st.Outbox) >= maxOutbox {
		m.cfg.Logger.ErrorContext(ctx, "event outbox full: the log has been down too long; event not queued", slog.String("type", typ))
		return
	}
	m.st.Outbox = append(m.st.Outbox, outboxEvent{Type: typ, Details: b, Queued: m.cfg.Now().UTC()})
	if err := m.files.saveState(m.st); err != nil {
		m.st.Outbox = m.st.Outbox[:len(m.st.Outbox)-1]
		m.cfg.Logger.ErrorContext(ctx, "queue event", slog.String("type", typ), slog.Any("error", err))
	}
}

// flush logs queued events in order, stopping at the first failure.
func (m *Manager) flush(ctx context.Context) {
	// One flusher at a time: each logs the head of the outbox and then
	// removes it.
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	for {
		m.mu.Lock()
		if len(m.st.Outbox) == 0 {
			m.mu.Unlock()
			return
		}
		e := m.st.Outbox[0]
		m.mu.Unlock()
		var details map[string]any
		if json.Unmarshal(e.Details, &details) != nil || details == nil {
			details = map[string]any{}
		}
		details["queued_at"] = e.Queued.Format(time.RFC3339Nano)
		if err := m.cfg.Audit.Log(ctx, audit.Event{Type: e.Type, Details: details}); err != nil {
			return
		}
		m.mu.Lock()
		m.st.Outbox = m.st.Outbox[1:]
		err := m.files.saveState(m.st)
		m.mu.Unlock()
		if err != nil {
			m.cfg.Logger.ErrorContext(ctx, "record logged event", slog.Any("error", err))
			return
		}
	}
}

// purgePending asks for each pending purge in order, removing those the
// broker accepted; one that fails stays for Run to ask again. It returns
// the first failure (nil: none pending any more, or none asked for).
func (m *Manager) purgePending(ctx context.Context) error {
	if m.cfg.Purge == nil {
		return nil
	}
	m.purgeMu.Lock()
	defer m.purgeMu.Unlock()
	m.mu.Lock()
	pending := slices.Clone(m.st.Purges)
	m.mu.Unlock()
	var first error
	for _, p := range pending {
		n, err := m.cfg.Purge(ctx, p.KeyID, p.Effective, p.Reference)
		if err != nil {
			m.cfg.Logger.WarnContext(ctx, "revocation purge not accepted yet; asked again", slog.String("key_id", p.KeyID),
				slog.String("reference", p.Reference), slog.Any("error", err))
			if first == nil {
				first = err
			}
			continue
		}
		m.mu.Lock()
		prev := m.st.Purges
		m.st.Purges = slices.DeleteFunc(slices.Clone(m.st.Purges), func(q pendingPurge) bool { return q.Reference == p.Reference })
		err = m.files.saveState(m.st)
		if err != nil {
			m.st.Purges = prev
		}
		m.mu.Unlock()
		if err != nil {
			m.cfg.Logger.ErrorContext(ctx, "record accepted purge", slog.Any("error", err))
			return fmt.Errorf("record accepted purge: %w", err)
		}
		m.cfg.Logger.InfoContext(ctx, "revocation purge queued at the broker", slog.String("key_id", p.KeyID),
			slog.String("reference", p.Reference), slog.Int("digests", n))
	}
	return first
}

// PendingPurges is how many revocations' purges wait for the broker.
func (m *Manager) PendingPurges() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.st.Purges)
}

// Unlogged is how many events wait in the outbox for the log.
func (m *Manager) Unlogged() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.st.Outbox)
}

// Waits between passes over pending purges that the broker refused or did
// not answer (decision 0126): the n-th failed pass in a row waits
// purgeRetryMin·2^(n-1), capped at purgeRetryMax, jittered (libs/backoff).
const (
	purgeRetryMin = 5 * time.Second
	purgeRetryMax = time.Minute
)

// Run logs queued events every interval, and asks for pending purges at
// once and, after a refusal (here or in Revoke), again with backoff:
// 5 s doubling to 1 min, jittered, back to 5 s once a pass succeeds. It
// returns nil when ctx ends.
func (m *Manager) Run(ctx context.Context, interval time.Duration) error {
	if m.cfg.Audit == nil && m.cfg.Purge == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	b := backoff.New(backoff.Policy{Min: purgeRetryMin, Max: purgeRetryMax, Jitter: m.cfg.Jitter})
	var retry <-chan time.Time
	pass := func() {
		if m.purgePending(ctx) == nil {
			b.Reset()
			return
		}
		retry = m.cfg.After(b.Next())
	}
	if m.cfg.Audit != nil {
		m.flush(ctx)
	}
	pass()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if m.cfg.Audit != nil {
				m.flush(ctx)
			}
		case <-retry:
			retry = nil
			pass()
		case <-m.purgeRefused:
			// Revoke has just asked; ask again after the current wait,
			// or the first one, without lengthening a wait under way.
			if retry == nil {
				retry = m.cfg.After(b.Next())
			}
		}
	}
}

func (m *Manager) backendErr(name string, err error) error {
	switch {
	case errors.Is(err, keys.ErrUnavailable):
		return fmt.Errorf("%w: %s key %q: %v", ErrUnavailable, m.cfg.Backend.Kind(), name, err)
	case errors.Is(err, keys.ErrNotFound):
		return fmt.Errorf("%w: %s key %q is missing: create it in the key back end", ErrPrecondition, m.cfg.Backend.Kind(), name)
	case errors.Is(err, keys.ErrInvalid):
		return fmt.Errorf("%w: %s key %q: %v", ErrInvalid, m.cfg.Backend.Kind(), name, err)
	}
	return fmt.Errorf("%s key %q: %w", m.cfg.Backend.Kind(), name, err)
}
