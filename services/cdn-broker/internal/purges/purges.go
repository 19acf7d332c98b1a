// Package purges is the broker's durable purge queue: each job purges one
// digest on every configured target (commercial CDN or own edge), retried
// with capped exponential backoff and jitter until every target confirms.
//
// The queue is one JSON file in the broker's state directory, rewritten
// atomically (temporary file, fsync, rename) after every change, so a job
// accepted by Enqueue survives a crash and a restart resumes it. Every step
// is an audit event (purge.requested, purge.confirmed, purge.failed) kept
// in the same file until the log accepted it: purges go on while the
// catalog is down, and the events reach the log once it is back.
//
// The package does not decide who may purge (the broker's RPC policy does)
// and does not know any vendor API (Target does).
package purges

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custody-dev/custody/libs/daemon"
	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/strictjson"
	"github.com/custody-dev/custody/libs/tlog"
)

// Target is one CDN or edge that can drop a digest from its cache.
// Purge must be idempotent: it is called again after a failure, and after a
// restart for an attempt whose outcome was not recorded.
type Target interface {
	// Name is "cdn:<name>" or "edge:<name>", unique among the targets.
	Name() string
	// Purge returns nil once the target confirmed the purge.
	Purge(ctx context.Context, digest, reference string) error
}

// Log appends one audit event; the catalog's AppendEvent behind it records
// the broker as the actor. An error means the event may not be logged: the
// manager keeps it and tries again.
type Log interface {
	Append(ctx context.Context, typ, subjectDigest string, details []byte) error
}

// Errors wrapped by Enqueue.
var (
	// ErrInvalid: the request is malformed; the message says what to fix.
	ErrInvalid = errors.New("invalid purge request")
	// ErrFull: the queue holds MaxJobs pending jobs; retry later.
	ErrFull = errors.New("purge queue full")
	// ErrUnavailable: the queue could not be written; nothing was queued.
	ErrUnavailable = errors.New("purge queue unavailable")
)

// Limits on what callers can make the manager hold.
const (
	MaxDigests    = 100    // per Enqueue
	maxFinished   = 100    // finished jobs kept for Status
	maxOutbox     = 50_000 // events waiting for the log; purge.failed is dropped beyond
	maxErrorBytes = 300
	// maxPerStep bounds the attempts of one Step (8 at a time), so that a
	// hanging target delays the log and the next round by minutes, not
	// hours; the oldest jobs go first and the rest wait for the next Step.
	maxPerStep   = 64
	fileName     = "purges.json"
	maxFileBytes = 256 << 20
)

// Reasons a purge may be asked for.
var Reasons = []string{"retention-deleted", "artifact-revoked", "key-revoked", "kill-switch", "admin"}

var refRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// Config configures a Manager.
type Config struct {
	// Dir is the broker's state directory; the queue is Dir/purges.json.
	Dir     string
	Targets []Target
	Log     Log
	Logger  *slog.Logger
	// Registerer receives the metrics; nil: not registered.
	Registerer prometheus.Registerer
	// MinBackoff and MaxBackoff bound the wait after a failed attempt: the
	// n-th failure waits min·2^(n-1), capped at max, times a jitter factor
	// in [0.5, 1.5). Defaults 1s and 10m.
	MinBackoff, MaxBackoff time.Duration
	// AttemptTimeout bounds one call to a target; default 30s.
	AttemptTimeout time.Duration
	// AlertAfter is the number of failed attempts after which a target of a
	// job counts as stuck (metric custody_purge_stuck); default 5.
	AlertAfter int
	// MaxJobs bounds the pending jobs; default 10,000.
	MaxJobs int
	// Poll is how often Run looks for due attempts; default 1s.
	Poll time.Duration
	Now  func() time.Time
	// Jitter returns a number in [0, 1); default math/rand/v2.
	Jitter func() float64
}

// Job is one digest to purge on every target. Fields are exported for the
// queue file and Status; callers must not change a Job they got.
type Job struct {
	ID          string        `json:"id"`
	Digest      string        `json:"digest"`
	Reason      string        `json:"reason"`
	Reference   string        `json:"reference"`
	RequestedBy string        `json:"requested_by"`
	RequestedAt time.Time     `json:"requested_at"`
	Done        bool          `json:"done"`
	DoneAt      time.Time     `json:"done_at,omitzero"`
	Targets     []TargetState `json:"targets"`
}

// TargetState is one target's part of a job.
type TargetState struct {
	Name      string    `json:"name"`
	Confirmed bool      `json:"confirmed"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error,omitempty"`
	Next      time.Time `json:"next,omitzero"`
}

type event struct {
	Type    string          `json:"type"`
	Digest  string          `json:"digest"`
	Details json.RawMessage `json:"details"`
}

type queueFile struct {
	Pending  []*Job  `json:"pending"`
	Finished []*Job  `json:"finished"`
	Outbox   []event `json:"outbox"`
}

// Manager runs the queue. It is safe for concurrent use; Run drives the
// attempts, one target call at a time per job and target.
type Manager struct {
	cfg     Config
	path    string
	targets map[string]Target
	m       metrics

	mu sync.Mutex
	q  queueFile
}

type metrics struct {
	pending  prometheus.Gauge
	failures *prometheus.CounterVec
	stuck    *prometheus.GaugeVec
	outbox   prometheus.Gauge
	dropped  prometheus.Counter
}

// Open loads the queue from cfg.Dir (an empty queue if there is no file)
// and returns a manager. A queue file that does not parse is an error: the
// broker must not start and silently forget purges. A pending job whose
// target is no longer configured keeps that target (it shows in Status and
// keeps the job pending) until an operator restores the target or removes
// the job by hand.
func Open(cfg Config) (*Manager, error) {
	if cfg.Dir == "" {
		return nil, errors.New("purges: no state directory")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Minute
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 30 * time.Second
	}
	if cfg.AlertAfter <= 0 {
		cfg.AlertAfter = 5
	}
	if cfg.MaxJobs <= 0 {
		cfg.MaxJobs = 10_000
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg, path: filepath.Join(cfg.Dir, fileName), targets: map[string]Target{}}
	for _, t := range cfg.Targets {
		if _, dup := m.targets[t.Name()]; dup {
			return nil, fmt.Errorf("purges: two targets named %q", t.Name())
		}
		m.targets[t.Name()] = t
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("purges: state directory: %w", err)
	}
	b, err := os.ReadFile(m.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("purges: read queue: %w", err)
	default:
		if err := strictjson.Decode(b, maxFileBytes, &m.q); err != nil {
			return nil, fmt.Errorf("purges: queue file %s is damaged: %w: restore it from a backup or move it aside (its pending purges are then lost: re-run custody purge for them)", m.path, err)
		}
	}
	m.m = newMetrics(cfg.Registerer)
	m.mu.Lock()
	m.updateGauges()
	m.mu.Unlock()
	return m, nil
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "custody_purge_pending_jobs", Help: "Purge jobs not yet confirmed by every target."}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "custody_purge_failures_total",
			Help: "Failed purge attempts, by target."}, []string{"target"}),
		stuck: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "custody_purge_stuck",
			Help: "Pending jobs whose purge on the target failed at least the alert threshold of times, by target."}, []string{"target"}),
		outbox: prometheus.NewGauge(prometheus.GaugeOpts{Name: "custody_purge_events_unlogged", Help: "Purge events waiting for the catalog to accept them."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "custody_purge_events_dropped_total",
			Help: "purge.failed events not kept because too many events were waiting for the catalog."}),
	}
	if reg != nil {
		reg.MustRegister(m.pending, m.failures, m.stuck, m.outbox, m.dropped)
	}
	return m
}

// jobID is the same for the same (digest, reference), so a retried request
// finds its job.
func jobID(d, ref string) string {
	s := sha256.Sum256([]byte(d + "\n" + ref))
	return "pj-" + hex.EncodeToString(s[:8])
}

// Enqueue queues a purge of each digest on every target and returns the
// jobs once they are on disk. Queuing a (digest, reference) pair that is
// already pending or recently finished returns that job and queues nothing,
// unless the job lacks some of the targets (EnqueueOn made it): those are
// added and the job is pending again. Errors wrap ErrInvalid, ErrFull or
// ErrUnavailable; on error nothing is queued.
func (m *Manager) Enqueue(ctx context.Context, caller, reason, reference string, digests []string) ([]Job, error) {
	return m.EnqueueOn(ctx, caller, reason, reference, digests, func(string) bool { return true })
}

// IsCDN reports whether a target name is a commercial CDN's ("cdn:<name>").
func IsCDN(target string) bool { return strings.HasPrefix(target, "cdn:") }

// Targets returns the configured targets' names.
func (m *Manager) Targets() []string {
	out := make([]string, len(m.cfg.Targets))
	for i, t := range m.cfg.Targets {
		out[i] = t.Name()
	}
	return out
}

// EnqueueOn is Enqueue on the targets whose name on accepts only (the
// commercial CDNs for the kill switch's issued digests: edges drop their
// caches by themselves). A job for the same (digest, reference) that exists
// already gets the targets it lacks.
func (m *Manager) EnqueueOn(ctx context.Context, caller, reason, reference string, digests []string, on func(target string) bool) ([]Job, error) {
	if len(digests) == 0 || len(digests) > MaxDigests {
		return nil, fmt.Errorf("%w: %d digests: send 1 to %d", ErrInvalid, len(digests), MaxDigests)
	}
	if !slices.Contains(Reasons, reason) {
		return nil, fmt.Errorf("%w: reason %.40q: want one of %v", ErrInvalid, reason, Reasons)
	}
	if !refRE.MatchString(reference) {
		return nil, fmt.Errorf("%w: reference %.70q: want 1 to 64 of A-Z a-z 0-9 . _ : -", ErrInvalid, reference)
	}
	seen := map[string]bool{}
	norm := make([]string, len(digests))
	for i, d := range digests {
		h, err := digest.Parse(d)
		if err != nil {
			return nil, fmt.Errorf("%w: digest %d: %w", ErrInvalid, i+1, err)
		}
		norm[i] = "sha256:" + h
		if seen[norm[i]] {
			return nil, fmt.Errorf("%w: digest %s appears twice", ErrInvalid, norm[i])
		}
		seen[norm[i]] = true
	}
	var wanted []string
	for _, t := range m.cfg.Targets {
		if on(t.Name()) {
			wanted = append(wanted, t.Name())
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.q
	m.q.Pending = slices.Clone(old.Pending)
	m.q.Outbox = slices.Clone(old.Outbox)
	m.q.Finished = slices.Clone(old.Finished)
	now := m.cfg.Now().UTC()
	out := make([]Job, len(norm))
	added := 0
	for i, d := range norm {
		id := jobID(d, reference)
		if j := m.find(id); j != nil {
			var missing []string
			for _, w := range wanted {
				if !slices.ContainsFunc(j.Targets, func(t TargetState) bool { return t.Name == w }) {
					missing = append(missing, w)
				}
			}
			if len(missing) == 0 {
				out[i] = clone(j)
				continue
			}
			// A copy, so that a failed save leaves old as it was.
			c := clone(j)
			nj := &c
			m.q.Pending = slices.DeleteFunc(m.q.Pending, func(p *Job) bool { return p == j })
			m.q.Finished = slices.DeleteFunc(m.q.Finished, func(p *Job) bool { return p == j })
			nj.Done, nj.DoneAt = false, time.Time{}
			for _, w := range missing {
				nj.Targets = append(nj.Targets, TargetState{Name: w, Next: now})
			}
			m.q.Pending = append(m.q.Pending, nj)
			added++
			m.emit(tlog.TypePurgeRequested, d, map[string]any{"job": id, "reason": nj.Reason, "reference": reference, "requested_by": caller, "targets": missing})
			out[i] = clone(nj)
			continue
		}
		j := &Job{ID: id, Digest: d, Reason: reason, Reference: reference, RequestedBy: caller, RequestedAt: now}
		for _, w := range wanted {
			j.Targets = append(j.Targets, TargetState{Name: w, Next: now})
		}
		m.q.Pending = append(m.q.Pending, j)
		added++
		m.emit(tlog.TypePurgeRequested, d, map[string]any{"job": id, "reason": reason, "reference": reference, "requested_by": caller, "targets": append([]string{}, wanted...)})
		if len(j.Targets) == 0 {
			m.finish(j, now)
		}
		out[i] = clone(j)
	}
	if len(m.q.Pending) > m.cfg.MaxJobs {
		m.q = old
		return nil, fmt.Errorf("%w: %d jobs pending, at most %d: wait for them to finish (custody purge status)", ErrFull, len(old.Pending), m.cfg.MaxJobs)
	}
	if added > 0 {
		if err := m.save(); err != nil {
			m.q = old
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	m.updateGauges()
	m.cfg.Logger.InfoContext(ctx, "purge requested", slog.Int("digests", len(norm)), slog.Int("new_jobs", added),
		slog.String("reason", reason), slog.String("reference", reference), slog.String("caller", caller))
	return out, nil
}

func (m *Manager) find(id string) *Job {
	for _, j := range m.q.Pending {
		if j.ID == id {
			return j
		}
	}
	for _, j := range m.q.Finished {
		if j.ID == id {
			return j
		}
	}
	return nil
}

// Status returns the pending jobs, oldest first, then the finished ones,
// newest first.
func (m *Manager) Status() []Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Job
	for _, j := range m.q.Pending {
		out = append(out, clone(j))
	}
	for _, j := range slices.Backward(m.q.Finished) {
		out = append(out, clone(j))
	}
	return out
}

func clone(j *Job) Job {
	c := *j
	c.Targets = slices.Clone(c.Targets)
	return c
}

// Run attempts due purges and flushes events every Poll until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Poll)
	defer t.Stop()
	for {
		m.Step(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type attempt struct {
	job, digest, ref string
	target           Target
}

// Step makes every attempt that is due now, records the outcomes, then
// hands waiting events to the log. Run calls it; tests call it directly.
func (m *Manager) Step(ctx context.Context) {
	now := m.cfg.Now()
	var due []attempt
	m.mu.Lock()
	for _, j := range m.q.Pending {
		for _, ts := range j.Targets {
			if t, ok := m.targets[ts.Name]; ok && !ts.Confirmed && !ts.Next.After(now) {
				due = append(due, attempt{job: j.ID, digest: j.Digest, ref: j.Reference, target: t})
			}
		}
	}
	m.mu.Unlock()
	due = due[:min(len(due), maxPerStep)]

	type result struct {
		a   attempt
		err error
	}
	results := make([]result, len(due))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, a := range due {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			actx, cancel := context.WithTimeout(ctx, m.cfg.AttemptTimeout)
			defer cancel()
			results[i] = result{a, a.target.Purge(actx, a.digest, a.ref)}
		}()
	}
	wg.Wait()

	if len(results) > 0 {
		m.mu.Lock()
		now = m.cfg.Now().UTC()
		for _, r := range results {
			m.record(ctx, r.a, r.err, now)
		}
		if err := m.save(); err != nil {
			// The outcomes stay in memory; the next save writes them. A
			// restart before that repeats the attempts, which is harmless.
			m.cfg.Logger.ErrorContext(ctx, "cannot write purge queue", slog.Any("error", err))
		}
		m.updateGauges()
		m.mu.Unlock()
	}
	m.flush(ctx)
}

func (m *Manager) record(ctx context.Context, a attempt, err error, now time.Time) {
	idx := slices.IndexFunc(m.q.Pending, func(j *Job) bool { return j.ID == a.job })
	if idx < 0 {
		return
	}
	j := m.q.Pending[idx]
	ts := &j.Targets[slices.IndexFunc(j.Targets, func(t TargetState) bool { return t.Name == a.target.Name() })]
	ts.Attempts++
	if err == nil {
		ts.Confirmed, ts.LastError, ts.Next = true, "", time.Time{}
		done := !slices.ContainsFunc(j.Targets, func(t TargetState) bool { return !t.Confirmed })
		m.emit(tlog.TypePurgeConfirmed, j.Digest, map[string]any{"job": j.ID, "target": ts.Name, "attempts": ts.Attempts, "job_done": done})
		m.cfg.Logger.InfoContext(ctx, "purge confirmed", slog.String("job", j.ID), slog.String("digest", j.Digest), slog.String("target", ts.Name), slog.Int("attempts", ts.Attempts))
		if done {
			m.finish(j, now)
		}
		return
	}
	msg := err.Error()
	if len(msg) > maxErrorBytes {
		msg = msg[:maxErrorBytes] + "…"
	}
	ts.LastError = msg
	ts.Next = now.Add(m.backoff(ts.Attempts))
	m.m.failures.WithLabelValues(ts.Name).Inc()
	m.cfg.Logger.WarnContext(ctx, "purge failed", slog.String("job", j.ID), slog.String("digest", j.Digest), slog.String("target", ts.Name),
		slog.Int("attempts", ts.Attempts), slog.Time("next", ts.Next), slog.String("error", msg))
	if len(m.q.Outbox) >= maxOutbox {
		m.m.dropped.Inc()
		return
	}
	m.emit(tlog.TypePurgeFailed, j.Digest, map[string]any{"job": j.ID, "target": ts.Name, "attempts": ts.Attempts, "error": msg, "next_attempt_at": ts.Next})
}

// backoff is the wait after the n-th failed attempt.
func (m *Manager) backoff(n int) time.Duration {
	d := m.cfg.MinBackoff
	for i := 1; i < n && d < m.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, m.cfg.MaxBackoff)
	return time.Duration(float64(d) * (0.5 + m.cfg.Jitter()))
}

// finish moves a job to the finished list; the caller holds mu.
func (m *Manager) finish(j *Job, now time.Time) {
	j.Done, j.DoneAt = true, now
	m.q.Pending = slices.DeleteFunc(m.q.Pending, func(p *Job) bool { return p == j })
	m.q.Finished = append(m.q.Finished, j)
	if n := len(m.q.Finished) - maxFinished; n > 0 {
		m.q.Finished = slices.Delete(m.q.Finished, 0, n)
	}
}

// emit adds an event to the outbox; the caller holds mu and saves.
func (m *Manager) emit(typ, d string, details map[string]any) {
	b, err := json.Marshal(details)
	if err != nil {
		panic(err) // only strings, ints, bools and times
	}
	m.q.Outbox = append(m.q.Outbox, event{Type: typ, Digest: d, Details: b})
}

// flush appends waiting events to the log in order, stopping at the first
// refusal so that the log sees them in the order they happened.
func (m *Manager) flush(ctx context.Context) {
	for {
		m.mu.Lock()
		if len(m.q.Outbox) == 0 {
			m.mu.Unlock()
			return
		}
		e := m.q.Outbox[0]
		m.mu.Unlock()
		if err := m.cfg.Log.Append(ctx, e.Type, e.Digest, e.Details); err != nil {
			m.cfg.Logger.WarnContext(ctx, "purge events wait for the catalog", slog.Any("error", err))
			return
		}
		m.mu.Lock()
		m.q.Outbox = m.q.Outbox[1:]
		// Written after each event: a crash here logs at most this one
		// event twice, never loses one.
		if err := m.save(); err != nil {
			m.cfg.Logger.ErrorContext(ctx, "cannot write purge queue", slog.Any("error", err))
		}
		m.updateGauges()
		m.mu.Unlock()
	}
}

// save writes the queue; the caller holds mu.
func (m *Manager) save() error {
	b, err := json.Marshal(&m.q)
	if err != nil {
		return err
	}
	return daemon.WriteFileAtomic(m.path, b, 0o600)
}

// updateGauges recomputes the gauges; the caller holds mu.
func (m *Manager) updateGauges() {
	m.m.pending.Set(float64(len(m.q.Pending)))
	m.m.outbox.Set(float64(len(m.q.Outbox)))
	stuck := map[string]int{}
	for _, t := range m.cfg.Targets {
		stuck[t.Name()] = 0
	}
	for _, j := range m.q.Pending {
		for _, ts := range j.Targets {
			if !ts.Confirmed && ts.Attempts >= m.cfg.AlertAfter {
				stuck[ts.Name]++
			}
		}
	}
	for name, n := range stuck {
		m.m.stuck.WithLabelValues(name).Set(float64(n))
	}
}
