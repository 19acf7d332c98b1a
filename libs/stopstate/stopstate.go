// Package stopstate is how the broker and edges learn the gatekeeper's stop
// state (kill switch, pauses, key and artifact revocations) and refuse what a
// stop, an epoch or a revocation forbids; one check for both, failing closed when the state is not
// known.
package stopstate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
)

var (
	// ErrUnknown means the current stop state could not be learned (the
	// gatekeeper is unreachable, or the last answer is too old): the
	// caller must refuse, as Unavailable.
	ErrUnknown = errors.New("stop state unknown")
	// ErrStopped means a stop applies now: the kill switch is on or the
	// environment is paused.
	ErrStopped = errors.New("stopped")
	// ErrBeforeEpoch means the decision or token was issued before the
	// latest kill switch, pause of its environment or key revocation.
	ErrBeforeEpoch = errors.New("issued before a stop epoch")
	// ErrRevoked means the artifact itself is revoked (gatekeeper
	// RevokeArtifact): nothing for its digest is used, whenever issued.
	ErrRevoked = errors.New("artifact revoked")
)

// Stop is one stop: the kill switch or one environment's pause.
type Stop struct {
	Active bool
	Epoch  int64
	// Since is when it was last turned on: the epoch's time.
	Since  time.Time
	Reason string
}

// KillSwitchPurgeReference is the purge reference of the kill switch turned
// on with epoch: the gatekeeper's purge of deployed digests and the
// broker's purge of the digests it issued CDN URLs for use the same one, so
// the broker queues one job per digest.
func KillSwitchPurgeReference(epoch int64) string { return fmt.Sprintf("kill-switch-%d", epoch) }

// State is a snapshot of every stop and epoch.
type State struct {
	KillSwitch Stop
	Pauses     map[string]Stop
	// Revocation is the time of the latest key revocation; zero if none.
	Revocation time.Time
	// Findings are, by artifact digest and environment, the latest
	// finding an advisory import raised there (decision 0098).
	Findings map[Target]Finding
	// FindingsOverflow, if set, refuses everything issued before it,
	// whatever its digest: the gatekeeper raised more findings than its
	// per-digest list holds.
	FindingsOverflow time.Time
	// Revoked are the revoked artifacts by digest (decision 0105).
	Revoked map[string]Revocation
	// RevokedOverflow, if set, refuses everything issued at or before it,
	// whatever its digest: more artifacts were revoked than the list holds.
	RevokedOverflow time.Time
}

// Revocation is one revoked artifact, for the refusal message.
type Revocation struct {
	Since    time.Time
	Reason   string
	By       string
	LogIndex int64
}

// Target is one artifact digest in one environment.
type Target struct {
	Digest, Environment string
}

// Finding is the epoch of the latest finding of one Target.
type Finding struct {
	Since    time.Time
	Advisory string
}

// FromProto converts the gatekeeper's answer.
func FromProto(p *gatekeeperv1.StopState) State {
	conv := func(s *gatekeeperv1.Stop) Stop {
		st := Stop{Active: s.GetActive(), Epoch: s.GetEpoch(), Reason: s.GetReason()}
		if s.GetEpochTime() != nil {
			st.Since = s.GetEpochTime().AsTime()
		}
		return st
	}
	st := State{KillSwitch: conv(p.GetKillSwitch()), Pauses: map[string]Stop{}, Findings: map[Target]Finding{}, Revoked: map[string]Revocation{}}
	for _, e := range p.GetPauses() {
		st.Pauses[e.GetEnvironment()] = conv(e.GetStop())
	}
	for _, f := range p.GetFindings() {
		k := Target{Digest: f.GetDigest(), Environment: f.GetEnvironment()}
		// A finding without a time refuses everything issued so far for
		// its target: it cannot be ordered, so it counts as latest.
		since := time.Unix(math.MaxInt32, 0)
		if f.GetEpochTime() != nil {
			since = f.GetEpochTime().AsTime()
		}
		if cur, ok := st.Findings[k]; !ok || since.After(cur.Since) {
			st.Findings[k] = Finding{Since: since, Advisory: f.GetAdvisoryId()}
		}
	}
	if p.GetFindingsOverflowTime() != nil {
		st.FindingsOverflow = p.GetFindingsOverflowTime().AsTime()
	}
	if p.GetRevocationTime() != nil {
		st.Revocation = p.GetRevocationTime().AsTime()
	}
	for _, r := range p.GetRevoked() {
		// A revocation without a time still refuses its digest; for
		// callers that name no digest it counts as latest.
		since := time.Unix(math.MaxInt32, 0)
		if r.GetEpochTime() != nil {
			since = r.GetEpochTime().AsTime()
		}
		st.Revoked[r.GetDigest()] = Revocation{Since: since, Reason: r.GetReason(), By: r.GetRevokedBy(), LogIndex: r.GetLogIndex()}
	}
	if p.GetRevokedOverflowTime() != nil {
		st.RevokedOverflow = p.GetRevokedOverflowTime().AsTime()
	}
	return st
}

// Check returns nil if something issued at issued for artifact digest dgst
// in environment env (either "" meaning unknown: every environment's pause
// and every digest's findings count) may still be used in state st.
// precision is the resolution of issued (a second for token
// times): an epoch within the same unit counts as after it, so that
// rounding never lets something through. A revoked digest is refused
// whenever issued; with dgst "" anything issued before a revocation is.
// Errors wrap ErrStopped, ErrRevoked or ErrBeforeEpoch and say what to do.
func (st State) Check(env, dgst string, issued time.Time, precision time.Duration) error {
	if r, ok := st.Revoked[dgst]; ok && dgst != "" {
		return revokedErr(dgst, r)
	}
	if st.KillSwitch.Active {
		return fmt.Errorf("%w: the kill switch is on since %s (%s): nothing is admitted or served until admins lift it",
			ErrStopped, st.KillSwitch.Since.UTC().Format(time.RFC3339), st.KillSwitch.Reason)
	}
	before := func(epoch time.Time) bool {
		return !epoch.IsZero() && !issued.After(epoch.Truncate(precision))
	}
	if before(st.KillSwitch.Since) {
		return fmt.Errorf("%w: issued before the kill switch of %s: admit again", ErrBeforeEpoch, st.KillSwitch.Since.UTC().Format(time.RFC3339Nano))
	}
	if before(st.Revocation) {
		return fmt.Errorf("%w: issued before the key revocation of %s: admit again", ErrBeforeEpoch, st.Revocation.UTC().Format(time.RFC3339Nano))
	}
	for name, p := range st.Pauses {
		if env != "" && name != env {
			continue
		}
		if p.Active {
			return fmt.Errorf("%w: environment %s is paused since %s (%s): wait until admins resume it",
				ErrStopped, name, p.Since.UTC().Format(time.RFC3339), p.Reason)
		}
		if before(p.Since) {
			return fmt.Errorf("%w: issued before environment %s was paused at %s: admit again", ErrBeforeEpoch, name, p.Since.UTC().Format(time.RFC3339Nano))
		}
	}
	if before(st.RevokedOverflow) {
		return fmt.Errorf("%w: issued before the gatekeeper's artifact revocations overflowed their list at %s, which refuses every earlier decision: admit again",
			ErrBeforeEpoch, st.RevokedOverflow.UTC().Format(time.RFC3339Nano))
	}
	if dgst == "" {
		for d, r := range st.Revoked {
			if before(r.Since) {
				return revokedErr(d, r)
			}
		}
	}
	if before(st.FindingsOverflow) {
		return fmt.Errorf("%w: issued before the gatekeeper's findings overflowed their list at %s, which refuses every earlier decision: admit again",
			ErrBeforeEpoch, st.FindingsOverflow.UTC().Format(time.RFC3339Nano))
	}
	if dgst != "" && env != "" {
		if f, ok := st.Findings[Target{dgst, env}]; ok && before(f.Since) {
			return findingErr(dgst, env, f)
		}
		return nil
	}
	for t, f := range st.Findings {
		if (dgst == "" || t.Digest == dgst) && (env == "" || t.Environment == env) && before(f.Since) {
			return findingErr(t.Digest, t.Environment, f)
		}
	}
	return nil
}

func revokedErr(dgst string, r Revocation) error {
	where := "not logged yet"
	if r.LogIndex >= 0 {
		where = fmt.Sprintf("artifact.revoked log index %d", r.LogIndex)
	}
	return fmt.Errorf("%w: artifact %s was revoked at %s by %s (%s): nothing for it is served; deploy another version. Reason: %s",
		ErrRevoked, dgst, r.Since.UTC().Format(time.RFC3339Nano), r.By, where, r.Reason)
}

func findingErr(dgst, env string, f Finding) error {
	return fmt.Errorf("%w: issued before advisory %s was found to affect %s in %s at %s: admissions of it there are denied now; fix or replace the artifact",
		ErrBeforeEpoch, f.Advisory, dgst, env, f.Since.UTC().Format(time.RFC3339Nano))
}

// Fetcher reads the current stop state; gatekeeperv1.GatekeeperServiceClient
// is one.
type Fetcher interface {
	GetStopState(ctx context.Context, in *gatekeeperv1.GetStopStateRequest, opts ...grpc.CallOption) (*gatekeeperv1.GetStopStateResponse, error)
}

var _ Fetcher = gatekeeperv1.GatekeeperServiceClient(nil)

// WatcherConfig configures a Watcher.
type WatcherConfig struct {
	Gatekeeper Fetcher
	// Interval is the time between two polls; zero means 500ms.
	Interval time.Duration
	// MaxAge is how old the last answer may be before Check fails closed
	// with ErrUnknown; zero means 3s.
	MaxAge time.Duration
	// OnKillSwitch, if set, is called with the kill switch when a poll
	// first sees it on (edges drop their caches; the broker purges what
	// it issued CDN URLs for); also at the first poll after a start while
	// it is on. It runs on the polling goroutine: return quickly.
	OnKillSwitch func(Stop)
	Logger       *slog.Logger
	// Registry, if set, gets custody_stop_state_age_seconds: the age of
	// the last answer (+Inf before the first), for alerts, labelled with
	// Service as the other custody_* metrics are (the alert names it).
	Registry prometheus.Registerer
	Service  string
	// Now defaults to time.Now.
	Now func() time.Time
}

// Watcher polls the gatekeeper's stop state. It is safe for concurrent use.
type Watcher struct {
	cfg WatcherConfig

	mu      sync.RWMutex
	state   State
	fetched time.Time // zero until the first answer
	failing bool
}

// NewWatcher returns a Watcher that knows nothing until its first poll.
func NewWatcher(cfg WatcherConfig) *Watcher {
	if cfg.Interval == 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 3 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Watcher{cfg: cfg}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "custody_stop_state_age_seconds", Help: "Age of the last stop state learned from the gatekeeper; +Inf before the first.",
			ConstLabels: prometheus.Labels{"service": cfg.Service},
		}, w.age))
	}
	return w
}

func (w *Watcher) age() float64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.fetched.IsZero() {
		return math.Inf(1)
	}
	return w.cfg.Now().Sub(w.fetched).Seconds()
}

// Poll asks the gatekeeper once and keeps the answer.
func (w *Watcher) Poll(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.MaxAge)
	defer cancel()
	asked := w.cfg.Now()
	resp, err := w.cfg.Gatekeeper.GetStopState(ctx, &gatekeeperv1.GetStopStateRequest{})
	if err != nil {
		w.mu.Lock()
		first := !w.failing
		w.failing = true
		w.mu.Unlock()
		if first && w.cfg.Logger != nil {
			w.cfg.Logger.WarnContext(ctx, "cannot learn the stop state from the gatekeeper: refusing once the last answer is too old", slog.Any("error", err))
		}
		return fmt.Errorf("get stop state from the gatekeeper: %w", err)
	}
	st := FromProto(resp.GetState())
	w.mu.Lock()
	killed := st.KillSwitch.Active && !w.state.KillSwitch.Active
	w.state, w.fetched, w.failing = st, asked, false
	w.mu.Unlock()
	if killed && w.cfg.OnKillSwitch != nil {
		w.cfg.OnKillSwitch(st.KillSwitch)
	}
	return nil
}

// Run polls every Interval until ctx ends; it returns nil then.
func (w *Watcher) Run(ctx context.Context) error {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		_ = w.Poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Check is State.Check on the latest answer, or ErrUnknown if there is none
// younger than MaxAge.
func (w *Watcher) Check(env, dgst string, issued time.Time, precision time.Duration) error {
	w.mu.RLock()
	st, fetched := w.state, w.fetched
	w.mu.RUnlock()
	if fetched.IsZero() {
		return fmt.Errorf("%w: no answer from the gatekeeper yet: check the gatekeeper is running", ErrUnknown)
	}
	if age := w.cfg.Now().Sub(fetched); age > w.cfg.MaxAge {
		return fmt.Errorf("%w: the last answer from the gatekeeper is %s old (limit %s): check the gatekeeper is running",
			ErrUnknown, age.Truncate(time.Millisecond), w.cfg.MaxAge)
	}
	return st.Check(env, dgst, issued, precision)
}
