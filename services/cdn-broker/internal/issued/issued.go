// Package issued is the broker's durable record of the digests it issued at
// least one commercial-CDN URL for, so that a kill switch can purge them
// from those CDNs' caches (decision 0123).
//
// The record is one JSON file holding only digests and their last issue
// times (never a token or a URL), rewritten atomically (temporary file,
// fsync, rename: daemon.WriteFileAtomic, as the purge queue). A digest seen
// for the first time is on disk before Note returns; a digest already
// recorded only has its time updated in memory, written by Flush (Run: at
// most once a second, and at shutdown), so a crash loses at most the last
// second's times, never a digest. Entries older than the retention are
// dropped; at the bound the oldest goes and is counted.
package issued

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custody-dev/custody/libs/daemon"
	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/strictjson"
)

// ErrUnavailable is wrapped by Note when the record cannot be written: the
// caller must not hand out the URLs.
var ErrUnavailable = errors.New("issued-digests record unavailable")

// Defaults and limits.
const (
	// DefaultRetention exceeds the one-year max-age edges send with blobs
	// (and the one-year maximum TTL of CloudFront, Cloud CDN and Media CDN)
	// plus the longest token TTL: a CDN may keep a blob that long after its
	// last fetch.
	DefaultRetention = 366 * 24 * time.Hour
	DefaultMax       = 100_000
	// MaxMax bounds --issued-digests-max, and with it the file.
	MaxMax = 1_000_000
	// FlushInterval is how often Run writes updated times.
	FlushInterval = time.Second
	version       = 1
	// maxFileBytes: an entry is about 110 bytes; MaxMax entries fit.
	maxFileBytes = 192 << 20
)

// Config configures a Record.
type Config struct {
	// Path is the record file; its directory must exist.
	Path string
	// Retention: an entry whose last issue is older is dropped; default
	// DefaultRetention.
	Retention time.Duration
	// Max bounds the entries; default DefaultMax, at most MaxMax.
	Max    int
	Now    func() time.Time
	Logger *slog.Logger
	// Registerer receives the metrics; nil: not registered.
	Registerer prometheus.Registerer
}

// Entry is one line of the file.
type Entry struct {
	Digest     string    `json:"digest"`
	LastIssued time.Time `json:"last_issued"`
}

type file struct {
	Version int     `json:"version"`
	Digests []Entry `json:"digests"`
}

// Record is the set of issued digests. It is safe for concurrent use.
type Record struct {
	cfg     Config
	gauge   prometheus.Gauge
	dropped prometheus.Counter

	// wmu serialises the writes of the file and is taken before mu; mu
	// guards the map and is never held during a write, so a request for a
	// recorded digest never waits for one.
	wmu   sync.Mutex
	write func(path string, b []byte) error // daemon.WriteFileAtomic; tests replace it
	mu    sync.Mutex
	last  map[string]time.Time
	dirty bool
	// pending is the digest being written by a Note: in last, not yet in
	// the file, so not known to anybody else yet.
	pending string
}

// Open loads the record from cfg.Path (empty if there is no file). A file
// that does not parse is an error naming it: the broker must not start and
// forget which digests the CDNs may hold.
func Open(cfg Config) (*Record, error) {
	if cfg.Path == "" {
		return nil, errors.New("issued: no file")
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Max <= 0 {
		cfg.Max = DefaultMax
	}
	if cfg.Max > MaxMax {
		return nil, fmt.Errorf("issued: at most %d digests, not %d", MaxMax, cfg.Max)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Record{cfg: cfg, last: map[string]time.Time{}, write: func(path string, b []byte) error { return daemon.WriteFileAtomic(path, b, 0o600) },
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "custody_broker_issued_digests",
			Help: "Digests the broker issued a commercial-CDN URL for within the retention (purged on a kill switch)."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "custody_broker_issued_digests_dropped_total",
			Help: "Issued digests dropped from the record because it was full, before their retention ended."}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(r.gauge, r.dropped)
	}
	b, err := os.ReadFile(cfg.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("issued: read %s: %w", cfg.Path, err)
	default:
		entries, err := Parse(b)
		if err != nil {
			return nil, fmt.Errorf("issued-digests file %s is damaged: %w: restore it from a backup, or move it aside and purge the commercial CDNs by hand on the next kill switch (the digests it held are not known otherwise)", cfg.Path, err)
		}
		for _, e := range entries {
			r.last[e.Digest] = e.LastIssued
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire()
	for len(r.last) > cfg.Max {
		r.dropOldest(context.Background())
	}
	r.gauge.Set(float64(len(r.last)))
	return r, nil
}

// Parse reads a record file: version 1, each digest in Custody's one form
// (sha256:<64 lowercase hex>), at most once, with a non-zero time.
func Parse(b []byte) ([]Entry, error) {
	var f file
	if err := strictjson.Decode(b, maxFileBytes, &f); err != nil {
		return nil, err
	}
	if f.Version != version {
		return nil, fmt.Errorf("version %d: want %d", f.Version, version)
	}
	if len(f.Digests) > MaxMax {
		return nil, fmt.Errorf("%d digests: at most %d", len(f.Digests), MaxMax)
	}
	seen := make(map[string]bool, len(f.Digests))
	for i, e := range f.Digests {
		if _, err := digest.Parse(e.Digest); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i+1, err)
		}
		if seen[e.Digest] {
			return nil, fmt.Errorf("entry %d: digest %s appears twice", i+1, e.Digest)
		}
		seen[e.Digest] = true
		if e.LastIssued.IsZero() {
			return nil, fmt.Errorf("entry %d: no last_issued time", i+1)
		}
	}
	return f.Digests, nil
}

// Note records that URLs were issued for d (sha256:<hex>) now. A digest
// not recorded yet is written to the file before Note returns; if that
// fails, the record is as before and the error wraps ErrUnavailable. A
// recorded digest only has its time updated in memory, without waiting for
// a write in progress.
func (r *Record) Note(ctx context.Context, d string) error {
	if _, err := digest.Parse(d); err != nil {
		return err
	}
	if r.noteKnown(d) {
		return nil
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.noteKnown(d) { // recorded by a Note that wrote meanwhile
		return nil
	}
	now := r.cfg.Now().UTC().Truncate(time.Second)
	r.mu.Lock()
	r.expire()
	var dropped []Entry
	for len(r.last) >= r.cfg.Max {
		dropped = append(dropped, r.dropOldestQuiet())
	}
	r.last[d] = now
	b, err := r.encode()
	wasDirty := r.dirty
	r.dirty = false
	r.pending = d
	err = r.writeUnlocked(b, err)
	defer r.mu.Unlock()
	r.pending = ""
	if err != nil {
		// As before: d unknown, the entries dropped for it back.
		delete(r.last, d)
		for _, x := range dropped {
			if _, ok := r.last[x.Digest]; !ok {
				r.last[x.Digest] = x.LastIssued
			}
		}
		r.dirty = wasDirty || r.dirty
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	for _, x := range dropped {
		r.countDropped(ctx, x.Digest)
	}
	r.gauge.Set(float64(len(r.last)))
	return nil
}

// noteKnown updates the time of d if it is recorded and fresh, and reports
// whether it was.
func (r *Record) noteKnown(d string) bool {
	now := r.cfg.Now().UTC().Truncate(time.Second)
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.last[d]
	if !ok || !r.fresh(t) || d == r.pending {
		return false
	}
	if now.After(t) {
		r.last[d], r.dirty = now, true
	}
	return true
}

// Digests returns the digests whose last issue is within the retention,
// sorted.
func (r *Record) Digests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for d, t := range r.last {
		if r.fresh(t) {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// Path is the record file.
func (r *Record) Path() string { return r.cfg.Path }

// Flush writes updated times and drops expired entries, if anything
// changed since the last write. Notes of recorded digests go on while it
// writes.
func (r *Record) Flush() error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.Lock()
	n := len(r.last)
	r.expire()
	if !r.dirty && n == len(r.last) {
		r.mu.Unlock()
		return nil
	}
	b, err := r.encode()
	r.dirty = false
	err = r.writeUnlocked(b, err)
	defer r.mu.Unlock()
	if err != nil {
		r.dirty = true // the next Flush tries again
		return err
	}
	r.gauge.Set(float64(len(r.last)))
	return nil
}

// Run flushes every FlushInterval until ctx ends, then once more.
func (r *Record) Run(ctx context.Context) error {
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := r.Flush(); err != nil {
				r.cfg.Logger.Error("cannot write the issued-digests record at shutdown: the last second's issue times are lost", slog.String("file", r.cfg.Path), slog.Any("error", err))
			}
			return nil
		case <-t.C:
			if err := r.Flush(); err != nil {
				// Times stay in memory and the next tick tries again;
				// digests were written when first seen.
				r.cfg.Logger.ErrorContext(ctx, "cannot write the issued-digests record", slog.String("file", r.cfg.Path), slog.Any("error", err))
			}
		}
	}
}

func (r *Record) fresh(t time.Time) bool {
	return r.cfg.Now().Sub(t) <= r.cfg.Retention
}

// expire drops entries past the retention; the caller holds mu.
func (r *Record) expire() {
	maps.DeleteFunc(r.last, func(_ string, t time.Time) bool { return !r.fresh(t) })
}

// dropOldestQuiet removes the entry with the oldest time and returns it;
// the caller holds mu and counts it once the change is saved.
func (r *Record) dropOldestQuiet() Entry {
	var oldest string
	var ot time.Time
	for d, t := range r.last {
		if oldest == "" || t.Before(ot) || t.Equal(ot) && d < oldest {
			oldest, ot = d, t
		}
	}
	delete(r.last, oldest)
	return Entry{Digest: oldest, LastIssued: ot}
}

func (r *Record) dropOldest(ctx context.Context) {
	r.countDropped(ctx, r.dropOldestQuiet().Digest)
}

func (r *Record) countDropped(ctx context.Context, d string) {
	r.dropped.Inc()
	r.cfg.Logger.WarnContext(ctx, "issued-digests record full: the oldest digest is dropped and will not be purged from commercial CDNs on a kill switch; raise --issued-digests-max",
		slog.String("digest", d), slog.Int("max", r.cfg.Max))
}

// writeUnlocked writes b, unless encoding it failed (err), with mu
// released meanwhile; the caller holds mu (and wmu), and holds mu again on
// return.
func (r *Record) writeUnlocked(b []byte, err error) error {
	r.mu.Unlock()
	defer r.mu.Lock()
	if err != nil {
		return err
	}
	return r.write(r.cfg.Path, b)
}

// encode is the file's content; the caller holds mu.
func (r *Record) encode() ([]byte, error) {
	f := file{Version: version, Digests: make([]Entry, 0, len(r.last))}
	for d, t := range r.last {
		f.Digests = append(f.Digests, Entry{Digest: d, LastIssued: t})
	}
	slices.SortFunc(f.Digests, func(a, b Entry) int { return cmp.Compare(a.Digest, b.Digest) })
	return json.Marshal(&f)
}
