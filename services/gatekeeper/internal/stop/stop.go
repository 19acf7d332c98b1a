// Package stop keeps the gatekeeper's pause and kill-switch state durably:
// one admin turns a stop on, a quorum of distinct admins or approvers lifts
// it, and every change moves an epoch or is logged.
package stop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custody-dev/custody/libs/daemon"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/strictjson"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
)

// KillSwitch is the target naming the kill switch. It is not a valid
// environment name, so no environment's pause can be mistaken for it.
const KillSwitch = "*kill-switch"

var (
	// ErrInvalid means the request is malformed (environment, reason).
	ErrInvalid = errors.New("invalid stop request")
	// ErrNotActive means there is nothing to lift.
	ErrNotActive = errors.New("stop not active")
	// ErrUnavailable means the state could not be persisted or the event
	// logged; for a lift nothing changed.
	ErrUnavailable = errors.New("stop state unavailable")
)

// Failure is an ErrUnavailable error with a message safe to show the
// caller: what happened and what to do, without the back end's details,
// which are in Err for the log.
type Failure struct {
	Public string
	Err    error
}

func (f *Failure) Error() string   { return f.Public + ": " + f.Err.Error() }
func (f *Failure) Unwrap() []error { return []error{ErrUnavailable, f.Err} }

// maxReasonLen bounds a reason: it is stored, logged and shown to callers.
const maxReasonLen = 512

// maxFileSize bounds the state file read at start: room for
// MaxRevocations with reasons of the longest.
const maxFileSize = 32 << 20

// maxPauses bounds how many environments may be paused, so that a state
// file and every GetStopState answer stay small.
const maxPauses = 256

// Stop is one stop's durable state.
type Stop struct {
	Active    bool      `json:"active"`
	Epoch     int64     `json:"epoch"`
	EpochTime time.Time `json:"epoch_time"`
	Reason    string    `json:"reason"`
	By        string    `json:"by"`
	// Approvals are the distinct SPIFFE IDs that approved lifting the
	// active stop, sorted.
	Approvals []string  `json:"approvals"`
	LiftedAt  time.Time `json:"lifted_at"`
}

// State is every stop.
type State struct {
	KillSwitch Stop            `json:"kill_switch"`
	Pauses     map[string]Stop `json:"pauses"`
	// Revoked are the revoked artifacts, oldest first (decision 0104).
	Revoked []Revocation `json:"revoked,omitempty"`
}

func (s State) clone() State {
	c := State{KillSwitch: s.KillSwitch, Pauses: make(map[string]Stop, len(s.Pauses)), Revoked: slices.Clone(s.Revoked)}
	c.KillSwitch.Approvals = slices.Clone(s.KillSwitch.Approvals)
	for k, v := range s.Pauses {
		v.Approvals = slices.Clone(v.Approvals)
		c.Pauses[k] = v
	}
	return c
}

// Logger appends audit events; admission.Catalog is one.
type Logger interface {
	AppendEvent(ctx context.Context, e admission.Event) (int64, error)
}

// Config configures a Store.
type Config struct {
	// File is the state file; it is created if missing.
	File string
	// Quorum is the number of distinct approvals that lifts a pause, by
	// environment; DefaultQuorum applies to the others, KillSwitchQuorum to
	// the kill switch. Each must be at least 1.
	Quorum           map[string]int
	DefaultQuorum    int
	KillSwitchQuorum int
	Log              Logger
	Logger           *slog.Logger
	Registry         prometheus.Registerer
	// RevocationRetention is how long an artifact revocation is listed in
	// the stop state; zero means DefaultRevocationRetention.
	RevocationRetention time.Duration
	Now                 func() time.Time
}

// Store is the durable stop state. Reads never wait on the log or the
// disk; changes are serialized. It is safe for concurrent use.
type Store struct {
	cfg         Config
	changes     *prometheus.CounterVec
	active      *prometheus.GaugeVec
	revocations prometheus.Counter

	op      sync.Mutex // serializes changes, held while logging
	mu      sync.RWMutex
	st      State
	revoked map[string]int // digest → index in st.Revoked
}

// Open loads the state file, or starts empty if it does not exist. A
// state file that cannot be read or parsed is an error: starting without
// the stops it holds would lift them silently.
func Open(cfg Config) (*Store, error) {
	var errs []error
	if cfg.File == "" {
		errs = append(errs, errors.New("a state file is required"))
	}
	if cfg.DefaultQuorum < 1 || cfg.KillSwitchQuorum < 1 {
		errs = append(errs, errors.New("lift quorums must be at least 1"))
	}
	for env, k := range cfg.Quorum {
		if k < 1 || !admission.ValidEnvironment(env) {
			errs = append(errs, fmt.Errorf("lift quorum %s=%d: want a valid environment and at least 1", env, k))
		}
	}
	if cfg.Log == nil || cfg.Logger == nil || cfg.Registry == nil {
		errs = append(errs, errors.New("log, logger and registry are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("stop config: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RevocationRetention <= 0 {
		cfg.RevocationRetention = DefaultRevocationRetention
	}
	s := &Store{cfg: cfg, st: State{Pauses: map[string]Stop{}}}
	b, err := os.ReadFile(cfg.File)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read stop state %s: %w", cfg.File, err)
	default:
		if err := strictjson.Decode(b, maxFileSize, &s.st); err != nil {
			return nil, fmt.Errorf("stop state %s is corrupt (%w): restore it from a backup; deleting it lifts every stop", cfg.File, err)
		}
		if s.st.Pauses == nil {
			s.st.Pauses = map[string]Stop{}
		}
		for env := range s.st.Pauses {
			if !admission.ValidEnvironment(env) || len(s.st.Pauses) > maxPauses {
				return nil, fmt.Errorf("stop state %s is corrupt (environment %q): restore it from a backup; deleting it lifts every stop", cfg.File, quote.Prefix(env))
			}
		}
	}
	if err := s.indexRevocations(); err != nil {
		return nil, fmt.Errorf("stop state %s is corrupt (%w): restore it from a backup; deleting it lifts every stop and revocation", cfg.File, err)
	}
	s.changes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "custody_stop_changes_total", Help: "Pause and kill-switch changes, by kind (pause, killswitch), environment (empty for the kill switch) and action (on, approved, off).",
	}, []string{"kind", "environment", "action"})
	s.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "custody_stop_active", Help: "1 while a stop applies, by kind (pause, killswitch) and environment (empty for the kill switch).",
	}, []string{"kind", "environment"})
	if err := cfg.Registry.Register(s.changes); err != nil {
		return nil, err
	}
	if err := cfg.Registry.Register(s.active); err != nil {
		return nil, err
	}
	s.revocations = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "custody_artifact_revocations_total", Help: "Artifacts revoked (RevokeArtifact) since the gatekeeper started.",
	})
	if err := cfg.Registry.Register(s.revocations); err != nil {
		return nil, err
	}
	s.setGauges(s.st)
	return s, nil
}

// State returns a copy of the current state.
func (s *Store) State() State {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.st.clone()
}

// Quorum returns how many distinct approvals lift target (an environment
// or KillSwitch).
func (s *Store) Quorum(target string) int {
	if target == KillSwitch {
		return s.cfg.KillSwitchQuorum
	}
	if k, ok := s.cfg.Quorum[target]; ok {
		return k
	}
	return s.cfg.DefaultQuorum
}

// Denials returns why an admission to env must be denied now; nil if no
// stop applies. It implements admission.Stops.
func (s *Store) Denials(env string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	if k := s.st.KillSwitch; k.Active {
		out = append(out, fmt.Sprintf("the kill switch is on since %s (%s, by %s): every admission is denied until admins lift it",
			k.EpochTime.UTC().Format(time.RFC3339), k.Reason, k.By))
	}
	if p, ok := s.st.Pauses[env]; ok && p.Active {
		out = append(out, fmt.Sprintf("environment %s is paused since %s (%s, by %s): admissions are denied until admins resume it",
			env, p.EpochTime.UTC().Format(time.RFC3339), p.Reason, p.By))
	}
	return out
}

var _ admission.Stops = (*Store)(nil)

// Result is the outcome of a change.
type Result struct {
	State State
	// Lifted is true when an approval reached the quorum.
	Lifted bool
	// Approvals and Quorum count the lift approvals.
	Approvals, Quorum int
	LogIndex          int64
}

// On turns target (an environment or KillSwitch) on by caller, an admin:
// the stop applies and its epoch moves forward at once, even if it was on
// already (gathered lift approvals are dropped). The state is persisted
// before it applies; the event is logged after. An error wrapping
// ErrUnavailable with a non-nil Result means the stop applies but its
// event could not be logged: retry, which moves the epoch again.
func (s *Store) On(ctx context.Context, target, reason, caller string) (*Result, error) {
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	reason, err := checkReason(reason)
	if err != nil {
		return nil, err
	}
	s.op.Lock()
	defer s.op.Unlock()

	s.mu.Lock()
	next := s.st.clone()
	cur := s.get(next, target)
	if target != KillSwitch && !cur.Active && cur.Epoch == 0 && len(next.Pauses) >= maxPauses {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %d environments were paused already, the limit", ErrInvalid, maxPauses)
	}
	// The epoch time is taken under the write lock: any admission that
	// read the state before saw no stop, and its decision time (taken
	// before it read) is earlier than the epoch's.
	now := s.cfg.Now().UTC()
	if !now.After(cur.EpochTime) {
		now = cur.EpochTime.Add(time.Nanosecond) // epochs only move forward
	}
	cur = Stop{Active: true, Epoch: cur.Epoch + 1, EpochTime: now, Reason: reason, By: caller, LiftedAt: cur.LiftedAt}
	s.put(&next, target, cur)
	if err := s.persist(next); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	s.st = next
	s.mu.Unlock()
	s.setGauges(next)
	s.changes.WithLabelValues(append(labels(target), "on")...).Inc()
	s.cfg.Logger.WarnContext(ctx, "stop turned on", slog.String("target", target), slog.Int64("epoch", cur.Epoch),
		slog.Time("epoch_time", cur.EpochTime), slog.String("reason", reason), slog.String("by", caller))

	res := &Result{State: next.clone(), Quorum: s.Quorum(target)}
	idx, err := s.log(ctx, eventType(target, "on"), target, cur, caller)
	if err != nil {
		return res, &Failure{Public: fmt.Sprintf("%s is ON (epoch %d) but its event could not be logged (the catalog is unavailable); run the command again to log it", describe(target), cur.Epoch), Err: err}
	}
	res.LogIndex = idx
	return res, nil
}

// Approve records caller's approval to lift target. When the distinct
// approvals reach the quorum the stop lifts; its epoch stays, so decisions
// and tokens issued while it applied stay refused. Each approval is logged
// before it counts: if the log is down nothing changes (ErrUnavailable).
// ErrNotActive if target is not on.
func (s *Store) Approve(ctx context.Context, target, caller string) (*Result, error) {
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	s.op.Lock()
	defer s.op.Unlock()

	next := s.State()
	cur := s.get(next, target)
	if !cur.Active {
		return nil, fmt.Errorf("%w: %s is not on: nothing to lift", ErrNotActive, describe(target))
	}
	if !slices.Contains(cur.Approvals, caller) {
		cur.Approvals = append(cur.Approvals, caller)
		sort.Strings(cur.Approvals)
	}
	k := s.Quorum(target)
	lifted := len(cur.Approvals) >= k
	action := "approved"
	if lifted {
		action = "off"
		cur.Active = false
		cur.LiftedAt = s.cfg.Now().UTC()
	}
	idx, err := s.log(ctx, eventType(target, action), target, cur, caller)
	if err != nil {
		return nil, &Failure{Public: fmt.Sprintf("the approval to lift %s could not be logged (the catalog is unavailable), so it does not count; retry when the catalog is back", describe(target)), Err: err}
	}
	s.put(&next, target, cur)
	s.mu.Lock()
	if err := s.persist(next); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	s.st = next
	s.mu.Unlock()
	s.setGauges(next)
	s.changes.WithLabelValues(append(labels(target), action)...).Inc()
	s.cfg.Logger.WarnContext(ctx, "stop lift approved", slog.String("target", target), slog.String("by", caller),
		slog.Int("approvals", len(cur.Approvals)), slog.Int("quorum", k), slog.Bool("lifted", lifted))
	n := len(cur.Approvals)
	if lifted {
		n = k
	}
	return &Result{State: next.clone(), Lifted: lifted, Approvals: n, Quorum: k, LogIndex: idx}, nil
}

func (s *Store) get(st State, target string) Stop {
	if target == KillSwitch {
		return st.KillSwitch
	}
	return st.Pauses[target]
}

func (s *Store) put(st *State, target string, v Stop) {
	if target == KillSwitch {
		st.KillSwitch = v
		return
	}
	st.Pauses[target] = v
}

func (s *Store) setGauges(st State) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	s.active.WithLabelValues(labels(KillSwitch)...).Set(b(st.KillSwitch.Active))
	for env, p := range st.Pauses {
		s.active.WithLabelValues(labels(env)...).Set(b(p.Active))
	}
}

// persist writes st atomically (daemon.WriteFileAtomic: temporary file,
// fsync, rename, fsync of the directory).
func (s *Store) persist(st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode stop state: %w", err)
	}
	err = daemon.WriteFileAtomic(s.cfg.File, append(b, '\n'), 0o600)
	if err != nil {
		return &Failure{Public: "the stop state could not be saved, so nothing changed; check the gatekeeper's disk", Err: fmt.Errorf("write %s: %w", s.cfg.File, err)}
	}
	return nil
}

type eventDetails struct {
	Environment string    `json:"environment,omitempty"`
	Epoch       int64     `json:"epoch"`
	EpochTime   time.Time `json:"epoch_time"`
	Reason      string    `json:"reason"`
	Approvals   []string  `json:"approvals,omitempty"`
	Quorum      int       `json:"quorum"`
	By          string    `json:"by"`
}

func (s *Store) log(ctx context.Context, typ, target string, cur Stop, caller string) (int64, error) {
	d := eventDetails{Epoch: cur.Epoch, EpochTime: cur.EpochTime, Reason: cur.Reason, Approvals: cur.Approvals, Quorum: s.Quorum(target), By: caller}
	if target != KillSwitch {
		d.Environment = target
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return s.cfg.Log.AppendEvent(ctx, admission.Event{Type: typ, Details: bytes.TrimSpace(buf.Bytes())})
}

func labels(target string) []string {
	if target == KillSwitch {
		return []string{"killswitch", ""}
	}
	return []string{"pause", target}
}

func eventType(target, action string) string {
	if target == KillSwitch {
		return "killswitch." + action
	}
	return "pause." + action
}

func checkTarget(target string) error {
	if target == KillSwitch || admission.ValidEnvironment(target) {
		return nil
	}
	return fmt.Errorf("%w: environment %q: want a name like prod or staging", ErrInvalid, quote.Prefix(target))
}

func describe(target string) string {
	if target == KillSwitch {
		return "the kill switch"
	}
	return "the pause of " + target
}

// checkReason trims reason and refuses an empty, oversized or
// non-printable one.
func checkReason(reason string) (string, error) {
	reason = strings.TrimSpace(reason)
	if reason == "" || len(reason) > maxReasonLen || !utf8.ValidString(reason) || strings.ContainsFunc(reason, isControl) {
		return "", fmt.Errorf("%w: a reason is required: at most %d bytes of printable UTF-8", ErrInvalid, maxReasonLen)
	}
	return reason, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
