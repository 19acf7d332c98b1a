// Package finding re-evaluates, on every advisory import, the artifacts
// admitted or deployed to an environment, logs a finding for each newly
// affected one, and keeps the per-artifact epochs the broker and edges
// refuse older decisions and tokens by (decisions 0097 and 0098).
package finding

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/artifact"
	"github.com/custody-dev/custody/libs/daemon"
	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/strictjson"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
)

// Defaults of the bounds; see Config.
const (
	DefaultRetention  = 48 * time.Hour
	DefaultMaxTargets = 20_000
	DefaultMaxEpochs  = 10_000
	DefaultInterval   = time.Second
	// ImportWindow is how long after an import an artifact first seen
	// admitted is evaluated too: the catalog logs an import before it
	// stores its advisories (decision 0081), so an admission logged just
	// after the import may not have seen them.
	ImportWindow = time.Minute
)

// maxFileSize bounds the state file read at start.
const maxFileSize = 256 << 20

// Log reads the transparency log; remote.Catalog is one.
type Log interface {
	// Entries returns the leaves of consecutive log entries from start,
	// within the latest co-signed checkpoint; none (and no error) when
	// start is the checkpoint's size.
	Entries(ctx context.Context, start uint64) ([][]byte, error)
}

// Events appends audit events; remote.Catalog is one.
type Events interface {
	AppendEvent(ctx context.Context, e admission.Event) (int64, error)
}

// Evaluator tells which advisories make the admission policy deny an
// artifact in an environment; admission.Gate is one.
type Evaluator interface {
	AdvisoryDenials(ctx context.Context, req admission.Request) ([]admission.Denial, error)
}

var _ Evaluator = (*admission.Gate)(nil)

// Config configures a Store.
type Config struct {
	// File keeps the state (log position, artifacts, findings raised);
	// created if missing.
	File      string
	Log       Log
	Events    Events
	Evaluator Evaluator
	// TrustDomain is the log's: only entries whose actor may write their
	// type (libs/tlog's emitter table) are read.
	TrustDomain spiffeid.TrustDomain
	// Retention is how long a finding's epoch is sent in the stop state:
	// longer than any decision or token can be used (the edges accept
	// tokens living at most 24h). Zero means DefaultRetention.
	Retention time.Duration
	// MaxTargets bounds the (artifact, environment) pairs kept; at the
	// bound the least recently admitted pair that was never deployed (else
	// the least recently seen) is dropped and counted. Zero means
	// DefaultMaxTargets.
	MaxTargets int
	// MaxEpochs bounds the per-artifact epochs in the stop state; a
	// finding past it moves the overflow epoch instead. Zero means
	// DefaultMaxEpochs.
	MaxEpochs int
	// Interval is the time between two polls of the log when caught up;
	// zero means DefaultInterval.
	Interval time.Duration
	Logger   *slog.Logger
	Registry prometheus.Registerer
	Now      func() time.Time
}

// raised is one finding raised.
type raised struct {
	Time        time.Time `json:"time"`
	Severity    string    `json:"severity"`
	LogIndex    int64     `json:"log_index"`
	ImportIndex int64     `json:"import_log_index"`
	// DryRun findings are logged but move no epoch: the environment is
	// in dry-run, where the real decision is reported and admissions
	// allowed.
	DryRun bool `json:"dry_run,omitempty"`
}

// target is one artifact admitted or deployed to one environment.
type target struct {
	Name        string `json:"name,omitempty"`
	Version     string `json:"version,omitempty"`
	Digest      string `json:"digest"`
	Environment string `json:"environment"`
	Deployed    bool   `json:"deployed"`
	// Seen is the time of the latest entry that admitted or deployed it.
	Seen time.Time `json:"seen"`
	// Raised are the findings raised, by advisory id.
	Raised map[string]raised `json:"raised,omitempty"`
}

func (t *target) epoch() (time.Time, string) {
	var at time.Time
	var id string
	for a, r := range t.Raised {
		if r.DryRun {
			continue
		}
		if r.Time.After(at) || (r.Time.Equal(at) && a < id) {
			at, id = r.Time, a
		}
	}
	return at, id
}

type state struct {
	// Next is the index of the next log entry to read.
	Next uint64 `json:"next"`
	// LastImport is the index of the latest advisories.imported entry
	// read (-1: none), LastImportTime its time.
	LastImport     int64              `json:"last_import"`
	LastImportTime time.Time          `json:"last_import_time"`
	Targets        map[string]*target `json:"targets"`
	// Overflow refuses everything issued before it: set when a finding
	// would have put more than MaxEpochs epochs in the stop state.
	Overflow time.Time `json:"overflow"`
}

func key(dgst, env string) string { return dgst + " " + env }

// Epoch is the latest finding of one artifact in one environment.
type Epoch struct {
	Digest, Environment string
	Time                time.Time
	Advisory            string
}

// Store follows the log and keeps the findings. Step and Run must not be
// called concurrently with each other; Epochs is safe at any time.
type Store struct {
	cfg Config

	raisedTotal  *prometheus.CounterVec
	errorsTotal  prometheus.Counter
	droppedTotal prometheus.Counter
	overflows    prometheus.Counter
	lastSuccess  prometheus.Gauge

	mu sync.RWMutex // guards st against Epochs; Step is the only writer
	st state
}

// Open loads the state file, or starts at the beginning of the log if it
// does not exist. A state file that does not parse is an error: starting
// over would raise every finding again.
func Open(cfg Config) (*Store, error) {
	var errs []error
	if cfg.File == "" {
		errs = append(errs, errors.New("a state file is required"))
	}
	if cfg.Log == nil || cfg.Events == nil || cfg.Evaluator == nil || cfg.Logger == nil || cfg.Registry == nil {
		errs = append(errs, errors.New("log, events, evaluator, logger and registry are required"))
	}
	if cfg.TrustDomain.IsZero() {
		errs = append(errs, errors.New("a trust domain is required"))
	}
	if cfg.Retention < 0 || cfg.MaxTargets < 0 || cfg.MaxEpochs < 0 || cfg.Interval < 0 {
		errs = append(errs, errors.New("retention, bounds and interval must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("finding config: %w", err)
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.MaxTargets == 0 {
		cfg.MaxTargets = DefaultMaxTargets
	}
	if cfg.MaxEpochs == 0 {
		cfg.MaxEpochs = DefaultMaxEpochs
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Store{cfg: cfg, st: state{LastImport: -1, Targets: map[string]*target{}}}
	b, err := os.ReadFile(cfg.File)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read finding state %s: %w", cfg.File, err)
	default:
		if err := strictjson.Decode(b, maxFileSize, &s.st); err != nil {
			return nil, fmt.Errorf("finding state %s is corrupt (%w): restore it from a backup; deleting it re-reads the whole log and raises every finding again", cfg.File, err)
		}
		if s.st.Targets == nil {
			s.st.Targets = map[string]*target{}
		}
		for k, t := range s.st.Targets {
			if t == nil || k != key(t.Digest, t.Environment) {
				return nil, fmt.Errorf("finding state %s is corrupt (target %q): restore it from a backup", cfg.File, k)
			}
		}
	}
	s.raisedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "custody_gatekeeper_findings_raised_total",
		Help: "Findings raised by re-evaluation after an advisory import: an advisory that now denies an admitted or deployed artifact, by environment and severity.",
	}, []string{"environment", "severity"})
	s.errorsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "custody_gatekeeper_reevaluation_errors_total",
		Help: "Re-evaluation steps that failed (log unreadable, an artifact could not be evaluated, a finding could not be logged); each is retried.",
	})
	s.droppedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "custody_gatekeeper_reevaluation_targets_dropped_total",
		Help: "Admitted or deployed artifacts no longer re-evaluated because the gatekeeper's bound of tracked artifacts was reached.",
	})
	s.overflows = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "custody_gatekeeper_findings_overflows_total",
		Help: "Findings that moved the overflow epoch (every earlier decision and token refused) because the stop state's per-artifact list was full.",
	})
	s.lastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "custody_gatekeeper_reevaluation_last_success_timestamp_seconds",
		Help: "When the re-evaluation last caught up with the log (Unix seconds); 0 before the first time.",
	})
	for _, c := range []prometheus.Collector{s.raisedTotal, s.errorsTotal, s.droppedTotal, s.overflows, s.lastSuccess} {
		if err := cfg.Registry.Register(c); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Epochs returns the per-artifact epochs younger than the retention and
// after the overflow epoch, sorted by digest then environment, and the
// overflow epoch (zero if none). They are what GetStopState sends.
func (s *Store) Epochs() ([]Epoch, time.Time) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.liveEpochs(s.cfg.Now()), s.st.Overflow
}

// liveEpochs needs s.mu held (either way).
func (s *Store) liveEpochs(now time.Time) []Epoch {
	var out []Epoch
	for _, t := range s.st.Targets {
		at, id := t.epoch()
		if at.IsZero() || !at.After(s.st.Overflow) || now.Sub(at) > s.cfg.Retention {
			continue
		}
		out = append(out, Epoch{Digest: t.Digest, Environment: t.Environment, Time: at, Advisory: id})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Digest != out[j].Digest {
			return out[i].Digest < out[j].Digest
		}
		return out[i].Environment < out[j].Environment
	})
	return out
}

// Run follows the log until ctx ends; it returns nil then. Failed steps
// are logged, counted and retried.
func (s *Store) Run(ctx context.Context) error {
	failing := false
	for {
		more, err := s.Step(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			s.errorsTotal.Inc()
			if !failing {
				s.cfg.Logger.ErrorContext(ctx, "advisory re-evaluation failed: retrying (admissions still deny by the advisories; older decisions are not refused until it succeeds)", slog.Any("error", err))
			}
			failing = true
		default:
			if failing {
				s.cfg.Logger.InfoContext(ctx, "advisory re-evaluation recovered")
			}
			failing = false
			if more {
				continue
			}
			s.lastSuccess.Set(float64(s.cfg.Now().Unix()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.cfg.Interval):
		}
	}
}

// entryDetails are the fields read from admission.decided and
// deployment.recorded details.
type entryDetails struct {
	Decision    string `json:"decision"`
	Name        string `json:"name"`
	Version     string `json:"version"`
	Digest      string `json:"digest"`
	Environment string `json:"environment"`
}

// Step reads one page of log entries from the saved position: allow
// decisions and deployments add (artifact, environment) targets, an
// advisories.imported entry has every target re-evaluated; each advisory
// that now denies a target and was not raised for it before is logged as
// a finding.raised entry, counted, and becomes the target's epoch. The
// position is saved only once every evaluation of the page succeeded, so
// a failed step is retried from the same page; findings already raised
// are not raised again. more reports that the page was full.
func (s *Store) Step(ctx context.Context) (more bool, err error) {
	leaves, err := s.cfg.Log.Entries(ctx, s.st.Next)
	if err != nil {
		return false, fmt.Errorf("read the log from %d: %w", s.st.Next, err)
	}
	// Work on a copy of the position and the new targets: a failed step
	// leaves the saved state as it was, apart from findings raised.
	next, lastImport, lastImportTime := s.st.Next, s.st.LastImport, s.st.LastImportTime
	added := map[string]*target{}
	dirty := map[string]bool{}
	for i, leaf := range leaves {
		index := next + uint64(i)
		e, err := tlog.ParseEntry(leaf)
		if err != nil {
			s.cfg.Logger.WarnContext(ctx, "skipping a malformed log entry", slog.Uint64("index", index), slog.Any("error", err))
			continue
		}
		if !s.mayEmit(e) {
			continue
		}
		switch e.Type {
		case tlog.TypeAdvisoriesImported:
			lastImport, lastImportTime = int64(index), e.Time
			for k := range s.st.Targets {
				dirty[k] = true
			}
			for k := range added {
				dirty[k] = true
			}
		case tlog.TypeAdmissionDecided, tlog.TypeDeploymentRecorded:
			var d entryDetails
			if err := json.Unmarshal(e.Details, &d); err != nil {
				continue
			}
			deployed := e.Type == tlog.TypeDeploymentRecorded
			if (!deployed && d.Decision != "allow") || !digest.Valid(d.Digest) || !artifact.ValidEnvironment(d.Environment) {
				continue
			}
			k := key(d.Digest, d.Environment)
			t, known := added[k]
			if !known {
				if old, ok := s.st.Targets[k]; ok {
					c := *old
					t, known = &c, true
				}
			}
			if !known {
				t = &target{Name: d.Name, Version: d.Version, Digest: d.Digest, Environment: d.Environment}
				if lastImport >= 0 && !e.Time.After(lastImportTime.Add(ImportWindow)) {
					dirty[k] = true
				}
			}
			t.Deployed = t.Deployed || deployed
			if e.Time.After(t.Seen) {
				t.Seen = e.Time
			}
			added[k] = t
		}
	}
	s.mu.Lock()
	for k, t := range added {
		if old, ok := s.st.Targets[k]; ok {
			t.Raised = old.Raised
		}
		s.st.Targets[k] = t
	}
	s.prune(ctx)
	s.mu.Unlock()

	keys := make([]string, 0, len(dirty))
	for k := range dirty {
		if _, ok := s.st.Targets[k]; ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := s.evaluate(ctx, s.st.Targets[k], lastImport); err != nil {
			return false, err
		}
	}
	s.mu.Lock()
	s.st.Next, s.st.LastImport, s.st.LastImportTime = next+uint64(len(leaves)), lastImport, lastImportTime
	err = s.persist()
	s.mu.Unlock()
	if err != nil {
		return false, err
	}
	return len(leaves) > 0, nil
}

// mayEmit reports whether e's actor may write its type: the catalog
// enforces it, and the gatekeeper does not take its word for it.
func (s *Store) mayEmit(e *tlog.Entry) bool {
	em, ok := tlog.EmitterOf(e.Type)
	if !ok {
		return false
	}
	id, err := spiffeid.FromString(e.Actor)
	return err == nil && em.Allows(s.cfg.TrustDomain, id)
}

// prune drops targets that can no longer matter (never deployed, admitted
// and raised longer ago than the retention), then, past MaxTargets, the
// least recently seen ones, never-deployed first. s.mu must be held.
func (s *Store) prune(ctx context.Context) {
	now := s.cfg.Now()
	for k, t := range s.st.Targets {
		at, _ := t.epoch()
		if !t.Deployed && now.Sub(t.Seen) > s.cfg.Retention && now.Sub(at) > s.cfg.Retention {
			delete(s.st.Targets, k)
		}
	}
	over := len(s.st.Targets) - s.cfg.MaxTargets
	if over <= 0 {
		return
	}
	all := make([]*target, 0, len(s.st.Targets))
	for _, t := range s.st.Targets {
		all = append(all, t)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Deployed != all[j].Deployed {
			return !all[i].Deployed
		}
		return all[i].Seen.Before(all[j].Seen)
	})
	for _, t := range all[:over] {
		delete(s.st.Targets, key(t.Digest, t.Environment))
		s.droppedTotal.Inc()
	}
	s.cfg.Logger.ErrorContext(ctx, "too many admitted or deployed artifacts to re-evaluate: the least recently seen are no longer re-evaluated on advisory imports (their admissions still deny)",
		slog.Int("dropped", over), slog.Int("limit", s.cfg.MaxTargets))
}

// findingDetails are the details of a finding.raised entry.
type findingDetails struct {
	Advisory    string   `json:"advisory"`
	Severity    string   `json:"severity"`
	Name        string   `json:"name,omitempty"`
	Version     string   `json:"version,omitempty"`
	Digest      string   `json:"digest"`
	Environment string   `json:"environment"`
	Components  []string `json:"components"`
	Reasons     []string `json:"reasons"`
	ImportIndex int64    `json:"import_log_index"`
	// EpochTime is unset for a dry-run finding, which moves no epoch.
	EpochTime *time.Time `json:"epoch_time,omitempty"`
	DryRun    bool       `json:"dry_run,omitempty"`
}

// evaluate re-evaluates t and raises each new denial. Each finding is
// logged before it is kept (at least once: a crash between the two logs
// it again after a restart), and kept before the next is logged.
func (s *Store) evaluate(ctx context.Context, t *target, importIndex int64) error {
	req := admission.Request{Name: t.Name, Version: t.Version, Environment: t.Environment}
	if t.Name == "" || t.Version == "" {
		req = admission.Request{Digest: t.Digest, Environment: t.Environment}
	}
	ds, err := s.cfg.Evaluator.AdvisoryDenials(ctx, req)
	if err != nil {
		return fmt.Errorf("re-evaluate %s in %s: %w", t.Digest, t.Environment, err)
	}
	for _, d := range ds {
		if _, ok := t.Raised[d.Advisory]; ok {
			continue
		}
		// The epoch is taken before the finding is logged: a decision
		// dated after it was made with the advisory stored, and denied.
		at := s.cfg.Now().UTC()
		if prev, _ := t.epoch(); !at.After(prev) {
			at = prev.Add(time.Nanosecond)
		}
		fd := findingDetails{
			Advisory: d.Advisory, Severity: d.Severity, Name: t.Name, Version: t.Version, Digest: t.Digest,
			Environment: t.Environment, Components: boundList(d.Components), Reasons: boundList(d.Reasons),
			ImportIndex: importIndex, DryRun: d.DryRun,
		}
		if !d.DryRun {
			fd.EpochTime = &at
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(fd); err != nil {
			return err
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		idx, err := s.cfg.Events.AppendEvent(lctx, admission.Event{Type: tlog.TypeFindingRaised, SubjectDigest: t.Digest, Details: bytes.TrimSpace(buf.Bytes())})
		cancel()
		if err != nil {
			return fmt.Errorf("log the finding of %s in %s for %s: %w", d.Advisory, t.Environment, t.Digest, err)
		}
		s.mu.Lock()
		live := len(s.liveEpochs(at))
		if cur, _ := t.epoch(); cur.After(s.st.Overflow) && at.Sub(cur) <= s.cfg.Retention {
			live-- // this target's epoch moves; it does not add one
		}
		if t.Raised == nil {
			t.Raised = map[string]raised{}
		}
		t.Raised[d.Advisory] = raised{Time: at, Severity: d.Severity, LogIndex: idx, ImportIndex: importIndex, DryRun: d.DryRun}
		overflow := !d.DryRun && live >= s.cfg.MaxEpochs
		if overflow {
			s.st.Overflow = at
		}
		err = s.persist()
		s.mu.Unlock()
		s.raisedTotal.WithLabelValues(t.Environment, d.Severity).Inc()
		s.cfg.Logger.WarnContext(ctx, "finding raised: an imported advisory now denies an admitted or deployed artifact",
			slog.String("advisory", d.Advisory), slog.String("severity", d.Severity), slog.String("digest", t.Digest),
			slog.String("artifact", t.Name+"@"+t.Version), slog.String("environment", t.Environment),
			slog.Int64("log_index", idx), slog.Int64("import_log_index", importIndex))
		if overflow {
			s.overflows.Inc()
			s.cfg.Logger.ErrorContext(ctx, "the stop state's per-artifact finding list is full: every decision and token issued so far is refused; deployers must admit again",
				slog.Int("limit", s.cfg.MaxEpochs), slog.Time("overflow_epoch", at))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// boundList keeps a finding's lists within a log entry.
func boundList(ss []string) []string {
	const maxItems, maxLen = 16, 512
	out := make([]string, 0, min(len(ss), maxItems))
	for i, s := range ss {
		if i == maxItems {
			out = append(out, fmt.Sprintf("… and %d more", len(ss)-i))
			break
		}
		if len(s) > maxLen {
			s = strings.ToValidUTF8(s[:maxLen], "") + "…"
		}
		out = append(out, s)
	}
	return out
}

// persist writes the state atomically; s.mu must be held.
func (s *Store) persist() error {
	b, err := json.Marshal(s.st)
	if err != nil {
		return fmt.Errorf("encode finding state: %w", err)
	}
	if err := daemon.WriteFileAtomic(s.cfg.File, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save finding state %s: %w", s.cfg.File, err)
	}
	return nil
}
