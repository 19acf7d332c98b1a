// Package finding re-evaluates, on every advisory import, the artifacts
// admitted or deployed to an environment, logs a finding for each newly
// affected one, and keeps the per-artifact epochs the broker and edges
// refuse older decisions and tokens by (decisions 0097, 0098 and 0119).
package finding

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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/transparency-dev/merkle/compact"

	"github.com/custody-dev/custody/libs/artifact"
	"github.com/custody-dev/custody/libs/daemon"
	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/strictjson"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/verify"
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

// Log reads the transparency log; remote.Catalog is one. Nothing it
// returns is trusted: the Store proves the leaves against the checkpoint.
type Log interface {
	// Entries returns the leaves of consecutive log entries from start,
	// at most a page, and the latest co-signed checkpoint (a signed note)
	// whose tree they are in; no leaves (and no error) when start is at
	// or past the checkpoint's size.
	Entries(ctx context.Context, start uint64) (leaves [][]byte, checkpoint []byte, err error)
	// LogConsistency returns an RFC 6962 consistency proof from the tree
	// of size first to the tree of size second.
	LogConsistency(ctx context.Context, first, second uint64) ([][]byte, error)
}

// ErrUnproved means a page of log entries did not prove to be the log's:
// the checkpoint served with it does not open with the trust root's log
// key or is not consistent with the log head held, or the leaves are not
// entries of its tree from the position read (an entry altered, dropped,
// inserted or reordered, a page beyond the checkpoint, entries withheld),
// or the catalog's log is smaller than what was already read (rolled
// back). Nothing of the page is acted on and nothing is saved; Run counts
// it and retries.
var ErrUnproved = errors.New("log entries not proved")

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
	// Root returns the trust root whose log keys open the checkpoints
	// the entries come with (admission.Gate.TrustRoot).
	Root func() (*trustroot.Root, error)
	// Head checks each of those checkpoints against the log head the
	// gatekeeper holds and persists (consistent with it, the head fresh):
	// loghead.Tracker, the one admissions are checked against.
	Head admission.LogHead
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
	// Next is the index of the next log entry to act on.
	Next uint64 `json:"next"`
	// Range is the compact Merkle range of the leaves [0, Range.Size),
	// each page of them proved against a co-signed checkpoint. Size is
	// Next, but less while the range of a state file written before
	// decision 0119 (nil here) is rebuilt.
	Range *provedRange `json:"range,omitempty"`
	// LastImport is the index of the latest advisories.imported entry
	// read (-1: none), LastImportTime its time.
	LastImport     int64              `json:"last_import"`
	LastImportTime time.Time          `json:"last_import_time"`
	Targets        map[string]*target `json:"targets"`
	// Overflow refuses everything issued before it: set when a finding
	// would have put more than MaxEpochs epochs in the stop state.
	Overflow time.Time `json:"overflow"`
}

// provedRange is a compact range as saved: the roots of the perfect
// subtrees covering [0, Size), left to right (at most 64).
type provedRange struct {
	Size   uint64   `json:"size"`
	Hashes [][]byte `json:"hashes"`
}

// ranges makes the compact ranges, with RFC 6962's interior node hash.
var ranges = &compact.RangeFactory{Hash: tlog.HashChildren}

// compactRange returns the range saved in st, empty if there is none.
func (st *state) compactRange() (*compact.Range, error) {
	if st.Range == nil {
		return ranges.NewEmptyRange(0), nil
	}
	if st.Range.Size > st.Next {
		return nil, fmt.Errorf("proved range of %d entries, more than the %d read", st.Range.Size, st.Next)
	}
	for i, h := range st.Range.Hashes {
		if len(h) != tlog.Hasher.Size() {
			return nil, fmt.Errorf("proved range hash %d is %d bytes", i, len(h))
		}
	}
	return ranges.NewRange(0, st.Range.Size, slices.Clone(st.Range.Hashes))
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

	raisedTotal   *prometheus.CounterVec
	errorsTotal   prometheus.Counter
	proofFailures prometheus.Counter
	droppedTotal  prometheus.Counter
	overflows     prometheus.Counter
	lastSuccess   prometheus.Gauge

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
	if cfg.Log == nil || cfg.Events == nil || cfg.Evaluator == nil || cfg.Root == nil || cfg.Head == nil || cfg.Logger == nil || cfg.Registry == nil {
		errs = append(errs, errors.New("log, events, evaluator, trust root, log head, logger and registry are required"))
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
		if _, err := s.st.compactRange(); err != nil {
			return nil, fmt.Errorf("finding state %s is corrupt (%w): restore it from a backup", cfg.File, err)
		}
		if s.st.Range == nil && s.st.Next > 0 {
			cfg.Logger.Info("the finding state has no proved range of the log: the entries already read are read again and proved, not acted on again",
				slog.String("file", cfg.File), slog.Uint64("entries", s.st.Next))
		}
	}
	s.raisedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "custody_gatekeeper_findings_raised_total",
		Help: "Findings raised by re-evaluation after an advisory import: an advisory that now denies an admitted or deployed artifact, by environment and severity.",
	}, []string{"environment", "severity"})
	s.errorsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "custody_gatekeeper_reevaluation_errors_total",
		Help: "Re-evaluation steps that failed (log unreadable, log entries that did not prove, an artifact could not be evaluated, a finding could not be logged); each is retried.",
	})
	s.proofFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "custody_gatekeeper_reevaluation_log_proof_failures_total",
		Help: "Pages of log entries the catalog served that did not prove against its co-signed checkpoint (an entry altered, dropped, inserted or reordered, entries withheld, a checkpoint that does not open or is inconsistent with the log head, a rolled-back log); nothing of them is acted on, and each is retried.",
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
	for _, c := range []prometheus.Collector{s.raisedTotal, s.errorsTotal, s.proofFailures, s.droppedTotal, s.overflows, s.lastSuccess} {
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
// are logged (once a streak of the same kind), counted and retried;
// pages that do not prove (ErrUnproved) are counted apart too.
func (s *Store) Run(ctx context.Context) error {
	failing := "" // "", "error" or "unproved"
	for {
		more, err := s.Step(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrUnproved):
			s.errorsTotal.Inc()
			s.proofFailures.Inc()
			if failing != "unproved" {
				s.cfg.Logger.ErrorContext(ctx, "the catalog served log entries that do not prove against its co-signed checkpoint: none of them is acted on, retrying; a catalog hiding, changing or inventing entries, or rolled back (docs/runbooks/advisory-finding.md)", slog.Any("error", err))
			}
			failing = "unproved"
		case err != nil:
			s.errorsTotal.Inc()
			if failing != "error" {
				s.cfg.Logger.ErrorContext(ctx, "advisory re-evaluation failed: retrying (admissions still deny by the advisories; older decisions are not refused until it succeeds)", slog.Any("error", err))
			}
			failing = "error"
		default:
			if failing != "" {
				s.cfg.Logger.InfoContext(ctx, "advisory re-evaluation recovered")
			}
			failing = ""
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

// Step reads one page of log entries from the saved position and proves
// it (see prove); a page that does not prove is ErrUnproved, and nothing
// of it is acted on. Then allow decisions and deployments add (artifact,
// environment) targets, an advisories.imported entry has every target
// re-evaluated; each advisory that now denies a target and was not
// raised for it before is logged as a finding.raised entry, counted, and
// becomes the target's epoch. The position and the proved range are
// saved only once every evaluation of the page succeeded, so a failed
// step is retried from the same page; findings already raised are not
// raised again. Entries below the position already acted on (a state
// file without a proved range, which is rebuilt first) are proved, not
// acted on again. more reports that the page had entries.
func (s *Store) Step(ctx context.Context) (more bool, err error) {
	rng, err := s.st.compactRange()
	if err != nil {
		return false, err
	}
	from := rng.End()
	leaves, signed, err := s.cfg.Log.Entries(ctx, from)
	if err != nil {
		return false, fmt.Errorf("read the log from %d: %w", from, err)
	}
	if rng, err = s.prove(ctx, rng, leaves, signed); err != nil {
		return false, err
	}
	// Work on a copy of the position and the new targets: a failed step
	// leaves the saved state as it was, apart from findings raised.
	next, lastImport, lastImportTime := s.st.Next, s.st.LastImport, s.st.LastImportTime
	end := from + uint64(len(leaves))
	act := leaves[min(uint64(len(leaves)), next-from):]
	added := map[string]*target{}
	dirty := map[string]bool{}
	for i, leaf := range act {
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
	s.st.Next, s.st.LastImport, s.st.LastImportTime = max(next, end), lastImport, lastImportTime
	s.st.Range = &provedRange{Size: rng.End(), Hashes: rng.Hashes()}
	err = s.persist()
	s.mu.Unlock()
	if err != nil {
		return false, err
	}
	return len(leaves) > 0, nil
}

// prove returns rng extended with leaves once they are proved to be the
// entries [rng.End(), rng.End()+len(leaves)) of the log: signed opens
// with the trust root's log key (its co-signature), the log head holds it
// consistent and fresh, it is no smaller than what was read, and the root
// of the extended range is its root (equal sizes) or proved a prefix of
// its tree by the catalog's consistency proof. No leaves prove only if
// the checkpoint's size is rng.End(): caught up. rng is not changed.
func (s *Store) prove(ctx context.Context, rng *compact.Range, leaves [][]byte, signed []byte) (*compact.Range, error) {
	from, n := rng.End(), uint64(len(leaves))
	root, err := s.cfg.Root()
	if err != nil {
		return nil, fmt.Errorf("no trust root to open the log's checkpoint with: %w", err)
	}
	cp, err := verify.OpenCheckpoint(signed, root)
	if err != nil {
		return nil, fmt.Errorf("%w: the checkpoint served with the entries from %d does not verify: %v", ErrUnproved, from, err)
	}
	switch {
	case cp.Size < s.st.Next: // from ≤ Next
		return nil, fmt.Errorf("%w: the catalog's co-signed log has %d entries, fewer than the %d already read: it was rolled back; after a restore of the catalog, restore the finding state too (docs/runbooks/advisory-finding.md)", ErrUnproved, cp.Size, s.st.Next)
	case n > cp.Size-from:
		return nil, fmt.Errorf("%w: %d entries from %d, beyond the checkpoint's %d", ErrUnproved, n, from, cp.Size)
	case n == 0 && from < cp.Size:
		return nil, fmt.Errorf("%w: no entries served from %d, but the checkpoint has %d", ErrUnproved, from, cp.Size)
	}
	denial, _, err := s.cfg.Head.Check(ctx, cp)
	if err != nil {
		return nil, fmt.Errorf("check the log's checkpoint at size %d against the log head: %w", cp.Size, err)
	}
	if denial != "" {
		return nil, fmt.Errorf("%w: the checkpoint at size %d served with the entries from %d: %s", ErrUnproved, cp.Size, from, denial)
	}
	ext, err := ranges.NewRange(0, from, slices.Clone(rng.Hashes()))
	if err != nil {
		return nil, err
	}
	for _, leaf := range leaves {
		if err := ext.Append(tlog.LeafHash(leaf), nil); err != nil {
			return nil, err
		}
	}
	hash, err := ext.GetRootHash(nil)
	if err != nil {
		return nil, err
	}
	if hash == nil {
		hash = tlog.Hasher.EmptyRoot()
	}
	prefix := &tlog.Checkpoint{Origin: cp.Origin, Size: ext.End(), Hash: hash}
	var proof [][]byte
	if prefix.Size != cp.Size {
		if proof, err = s.cfg.Log.LogConsistency(ctx, prefix.Size, cp.Size); err != nil {
			return nil, fmt.Errorf("read the consistency proof from %d to %d: %w", prefix.Size, cp.Size, err)
		}
	}
	if err := tlog.VerifyConsistency(prefix, cp, proof); err != nil {
		return nil, fmt.Errorf("%w: entries [%d, %d) are not those of the checkpoint at size %d: %v", ErrUnproved, from, prefix.Size, cp.Size, err)
	}
	return ext, nil
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
