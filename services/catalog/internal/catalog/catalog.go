package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/artifact"
	libdigest "github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/translog"
)

// finishTimeout bounds the work done after a leaf is committed as pending
// (append, wait for a checkpoint, store the proof). It is detached from the
// caller's context: once a row is pending, finishing it now is cheaper and
// safer than leaving it to recovery because a client went away.
const finishTimeout = 30 * time.Second

// GCPercent is the catalog process's garbage-collector target unless GOGC
// is set (daemon.GCPercent). Its live heap is a few tens of megabytes, and
// at Go's default of 100 collection took about a fifth of the CPU of an
// appended event under load (decision 0068).
const GCPercent = 400

// Config configures New.
type Config struct {
	Store Store
	Log   Log
	// VerifierKey is the log's note verifier key; stored evidence is
	// re-verified with it before it is returned.
	VerifierKey string
	// TrustDomain is the catalog's; only its members may write entries,
	// each only the types tlog.MayEmit allows it.
	TrustDomain spiffeid.TrustDomain
	// Registerer receives custody_catalog_entries_refused_total and the
	// advisory import counters; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// Now returns the current time; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// Prover, if set, proves the entries ListEvents returns against the
	// latest co-signed checkpoint; nil: their stored proofs are served.
	Prover Prover
	// Locker, if set, extends the per-name@version lock to every catalog
	// process sharing the store (PostgreSQL advisory locks); nil: the lock
	// is in-process only, which is enough for one process (SQLite).
	Locker Locker
	// SBOMParser parses the SBOM documents RecordSBOM stores; nil means
	// sbom.NewParser(2): at most two documents at once.
	SBOMParser *sbom.Parser
}

// Locker serializes work on one key across every process that shares it.
type Locker interface {
	// Lock waits until it holds key and returns the function that
	// releases it. An error means the lock is not held.
	Lock(ctx context.Context, key string) (unlock func(), err error)
}

// Catalog records artifacts and events in the log and the store.
//
// Crash safety of events. The log is their write-ahead record: an event
// is acknowledged once Tessera has durably sequenced it, and the indexer
// stores it from the log, with the store's indexed size in the same
// transaction; Recover indexes the rest at start (see indexer).
//
// Crash safety of artifacts and signatures. Every record is written in three steps: (1) the row is
// committed to the store as pending, with its exact leaf bytes and the
// log's size before the append; (2) the leaf is appended and the catalog
// waits for a checkpoint that covers it; (3) the index, proof and checkpoint
// are committed to the row. A crash after (1) leaves a pending row whose
// leaf is in the log at most once: Recover (at start) and any retry of the
// same name@version look for that exact leaf from the recorded size onwards
// (the leaf contains its time and actor, so it is unique) and either prove
// the entry found or append the same bytes again. So a committed pending row
// ends as exactly one log entry, and a record is never lost or duplicated.
// Within one process, a per-name@version lock makes sure no append of a leaf
// is still in flight while another caller looks for it.
//
// Methods are safe for concurrent use; records of different artifacts and
// all events proceed in parallel and share the log's batches.
type Catalog struct {
	store    Store
	log      Log
	verifier string
	td       spiffeid.TrustDomain
	refused  *prometheus.CounterVec
	now      func() time.Time
	logger   *slog.Logger
	locks    keyLocks
	locker   Locker
	parser   *sbom.Parser

	indexerOnce sync.Once
	ix          *indexer
	prover      Prover

	// importing is held by the one advisory import in progress.
	importing sync.Mutex
	// imports counts advisory imports by result, imported the advisories
	// they added or changed.
	imports  *prometheus.CounterVec
	imported prometheus.Counter
}

// New returns a catalog over cfg.Store and cfg.Log.
func New(cfg Config) *Catalog {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	parser := cfg.SBOMParser
	if parser == nil {
		parser = sbom.NewParser(2)
	}
	c := &Catalog{store: cfg.Store, log: cfg.Log, verifier: cfg.VerifierKey, td: cfg.TrustDomain, refused: newRefused(cfg.Registerer),
		now: now, logger: logger, prover: cfg.Prover, locker: cfg.Locker, parser: parser}
	c.imports, c.imported = newImportMetrics(cfg.Registerer)
	return c
}

// indexer returns the indexer of logged events, started on first use.
func (c *Catalog) indexer() *indexer {
	c.indexerOnce.Do(func() { c.ix = newIndexer(c) })
	return c.ix
}

// Close stops the indexer of logged events. Call it before closing the log
// and the store; events it has not stored yet are in the log, and Recover
// stores them at the next start.
func (c *Catalog) Close() {
	c.indexerOnce.Do(func() {})
	if c.ix != nil {
		c.ix.close()
	}
}

// RecordArtifact records a published artifact and its DSSE envelope: it
// appends an artifact.published entry, with actor as its actor, and returns
// the stored record once a signed checkpoint covers the entry. Recording the
// same name@version with the same digest again returns the existing record
// and created=false; another digest fails with ErrAlreadyExists. The
// artifact's CreatedAt is set by the catalog.
func (c *Catalog) RecordArtifact(ctx context.Context, actor string, a Artifact, envelope []byte) (rec *ArtifactRecord, created bool, err error) {
	if err := c.authorize(ctx, actor, tlog.TypeArtifactPublished); err != nil {
		return nil, false, err
	}
	if err := validateArtifact(a); err != nil {
		return nil, false, err
	}
	keyID, err := validateEnvelope(a, envelope)
	if err != nil {
		return nil, false, err
	}
	unlock, err := c.lock(ctx, a.Name+"@"+a.Version)
	if err != nil {
		return nil, false, err
	}
	defer unlock()

	existing, err := c.store.Artifact(ctx, a.Name, a.Version)
	switch {
	case err == nil:
		if existing.Artifact.Digest != a.Digest {
			return nil, false, fmt.Errorf("%w: %s@%s is recorded with digest %s; versions are immutable, publish a new version",
				ErrAlreadyExists, a.Name, a.Version, existing.Artifact.Digest)
		}
		if existing.Entry.Logged() {
			if err := c.verify(existing.ID, existing.Artifact, existing.Envelope, &existing.Entry, tlog.TypeArtifactPublished); err != nil {
				return nil, false, err
			}
			return existing, false, nil
		}
		// An earlier attempt committed the row but did not finish logging
		// it (a crash, or the log failed): finish that one, with its leaf.
		c.logger.InfoContext(ctx, "finishing pending artifact record", slog.String("artifact", a.Name+"@"+a.Version), slog.Int64("id", existing.ID))
		if err := c.finish(ctx, Ref{KindArtifact, existing.ID}, &existing.Entry); err != nil {
			return nil, false, err
		}
		return existing, true, nil
	case errors.Is(err, ErrNotFound):
	default:
		return nil, false, unavailable("look up artifact", err)
	}

	now := c.now().UTC()
	a.CreatedAt = now
	details, err := json.Marshal(publishedDetails{
		Size: a.Size, Channel: a.Channel, BuilderID: a.BuilderID, SourceRepo: a.SourceRepo, SourceCommit: a.SourceCommit,
	})
	if err != nil {
		return nil, false, fmt.Errorf("encode details: %w", err)
	}
	sum := sha256.Sum256(envelope)
	leaf, err := tlog.Entry{
		Type:           tlog.TypeArtifactPublished,
		Time:           now,
		Actor:          actor,
		Subject:        tlog.Subject{Name: a.Name, Version: a.Version, Digest: a.Digest},
		EnvelopeSHA256: hex.EncodeToString(sum[:]),
		Details:        details,
	}.Marshal()
	if err != nil {
		return nil, false, fmt.Errorf("%w: log entry: %v", ErrInvalid, err)
	}
	from, err := c.log.Size(ctx)
	if err != nil {
		return nil, false, unavailable("read log size", err)
	}
	rec = &ArtifactRecord{Artifact: a, Envelope: envelope, KeyID: keyID, Entry: Entry{Leaf: leaf, SearchFrom: from}, Dependencies: EnvelopeDependencies(envelope)}
	if rec.ID, err = c.store.InsertArtifact(ctx, rec); err != nil {
		if errors.Is(err, ErrAlreadyExists) {
			return nil, false, fmt.Errorf("%w: %s@%s was recorded concurrently; retry to get the record", ErrAlreadyExists, a.Name, a.Version)
		}
		return nil, false, unavailable("store artifact", err)
	}
	if err := c.append(ctx, Ref{KindArtifact, rec.ID}, &rec.Entry); err != nil {
		return nil, false, err
	}
	return rec, true, nil
}

// publishedDetails are the details of an artifact.published entry.
type publishedDetails struct {
	Size         int64  `json:"size"`
	Channel      string `json:"channel,omitempty"`
	BuilderID    string `json:"builder_id,omitempty"`
	SourceRepo   string `json:"source_repo,omitempty"`
	SourceCommit string `json:"source_commit,omitempty"`
}

// AppendEvent appends one audit event, with actor as its actor, and returns
// it once a co-signed checkpoint covers it, with its proof. actor must be
// allowed to write typ (tlog.MayEmit): otherwise it fails with
// ErrPermissionDenied and nothing is stored or logged. typ must not be
// artifact.published or artifact.resigned, which only RecordArtifact and
// RecordSignature log. A call that fails after its leaf was sequenced
// (the proof could not be stored in time) leaves the event in the log, and
// it is stored later, so a client that retries such a call may log it
// twice. While the store fails, events are refused with ErrUnavailable
// before they reach the log.
func (c *Catalog) AppendEvent(ctx context.Context, actor, typ, subjectDigest string, details []byte) (*Event, error) {
	return c.appendEvent(ctx, actor, typ, subjectDigest, details, true)
}

// SequenceEvent is AppendEvent that returns once the event is durably
// sequenced: its leaf is in the log at Entry.Index, on disk, so it is never
// lost or duplicated. The returned entry has no proof and the event no ID;
// the catalog stores both in the background once a co-signed checkpoint
// covers the entry.
func (c *Catalog) SequenceEvent(ctx context.Context, actor, typ, subjectDigest string, details []byte) (*Event, error) {
	return c.appendEvent(ctx, actor, typ, subjectDigest, details, false)
}

func (c *Catalog) appendEvent(ctx context.Context, actor, typ, subjectDigest string, details []byte, prove bool) (*Event, error) {
	if !tlog.ValidType(typ) {
		return nil, validateEvent(typ, subjectDigest, details)
	}
	if err := c.authorize(ctx, actor, typ); err != nil {
		return nil, err
	}
	if err := validateEvent(typ, subjectDigest, details); err != nil {
		return nil, err
	}
	now := c.now().UTC()
	leaf, err := tlog.Entry{
		Type:    typ,
		Time:    now,
		Actor:   actor,
		Subject: tlog.Subject{Digest: subjectDigest},
		Details: details,
	}.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: log entry: %v", ErrInvalid, err)
	}
	ix := c.indexer()
	if err := ix.admit(); err != nil {
		return nil, err
	}
	e := &Event{Type: typ, Actor: actor, SubjectDigest: subjectDigest, Details: details, CreatedAt: now, Entry: Entry{Leaf: leaf}}
	// The log is the event's write-ahead record: once Tessera has sequenced
	// the leaf it is durable, and the indexer stores it from the log.
	// Sequence waits for the index even if the caller goes away, so that an
	// error means the leaf is not in the log and the client's retry is the
	// only copy.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	forget := ix.remember(e)
	idx, err := c.log.Sequence(sctx, leaf)
	if err != nil {
		forget()
		return nil, logError("append to log", err)
	}
	e.Entry.SearchFrom, e.Entry.Sequenced, e.Entry.Index = idx, true, idx
	var done <-chan finishResult
	if prove {
		done = ix.await(idx)
		defer ix.forget(idx)
	}
	ix.sequenced(idx + 1)
	if !prove {
		return e, nil
	}
	if done == nil {
		// Indexed already: prove it here.
		p, err := c.log.Prove(sctx, idx, leaf)
		if err != nil {
			return nil, logError("prove event", err)
		}
		e.Entry.Proof, e.Entry.Checkpoint = p.Proof, p.Checkpoint
		return e, nil
	}
	select {
	case r := <-done:
		if r.err != nil {
			return nil, r.err
		}
		e.Entry.Proof, e.Entry.Checkpoint = r.p.Proof, r.p.Checkpoint
		return e, nil
	case <-sctx.Done():
		return nil, unavailable("wait for the event's proof", sctx.Err())
	}
}

// append appends a pending row's leaf and stores the evidence.
func (c *Catalog) append(ctx context.Context, ref Ref, e *Entry) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	p, err := c.log.Append(ctx, e.Leaf)
	if err != nil {
		if seq, ok := errors.AsType[*translog.Sequenced](err); ok {
			e.Sequenced, e.Index = true, seq.Index
			if serr := c.store.SetSequenced(ctx, ref, seq.Index); serr != nil {
				c.logger.WarnContext(ctx, "store log index", slog.Any("ref", ref), slog.Any("error", serr))
			}
		}
		return logError("append to log", err)
	}
	return c.setLogged(ctx, ref, e, p)
}

// finish completes a pending row: it proves the leaf if the log has it,
// and appends it otherwise.
func (c *Catalog) finish(ctx context.Context, ref Ref, e *Entry) error {
	if !e.Sequenced {
		idx, found, err := c.log.Find(ctx, e.Leaf, e.SearchFrom)
		if err != nil {
			return logError("look for pending entry", err)
		}
		if !found {
			c.logger.InfoContext(ctx, "pending entry is not in the log: appending it", slog.String("kind", string(ref.Kind)), slog.Int64("id", ref.ID))
			return c.append(ctx, ref, e)
		}
		e.Sequenced, e.Index = true, idx
	}
	c.logger.InfoContext(ctx, "pending entry is in the log: proving it", slog.String("kind", string(ref.Kind)), slog.Int64("id", ref.ID), slog.Uint64("index", e.Index))
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	p, err := c.log.Prove(ctx, e.Index, e.Leaf)
	if err != nil {
		return logError("prove pending entry", err)
	}
	return c.setLogged(ctx, ref, e, p)
}

func (c *Catalog) setLogged(ctx context.Context, ref Ref, e *Entry, p *translog.Proved) error {
	if err := c.store.SetLogged(ctx, ref, p.Index, p.Proof, p.Checkpoint); err != nil {
		return unavailable("store log evidence", err)
	}
	e.Sequenced, e.Index, e.Proof, e.Checkpoint = true, p.Index, p.Proof, p.Checkpoint
	return nil
}

// recoverConcurrency bounds how many pending rows Recover finishes at once;
// they share log batches like live requests do.
const recoverConcurrency = 64

// Recover finishes every pending row, e.g. after a crash, then stores the
// events of the log from the store's indexed size to the log's size. Call
// it before serving. It returns every failure at once; the indexing goes
// on in the background after a failure.
func (c *Catalog) Recover(ctx context.Context) error {
	if err := c.recoverPending(ctx); err != nil {
		return err
	}
	size, err := c.log.Size(ctx)
	if err != nil {
		return logError("read log size", err)
	}
	return c.indexer().catchUp(ctx, size)
}

// recoverPending finishes every pending row: artifacts and signatures,
// and events left pending by catalogs before the log was their
// write-ahead record.
func (c *Catalog) recoverPending(ctx context.Context) error {
	pending, err := c.store.Pending(ctx)
	if err != nil {
		return unavailable("list pending rows", err)
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, recoverConcurrency)
	)
	for _, p := range pending {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := c.recoverOne(ctx, p); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("recover %s %d: %w", p.Ref.Kind, p.Ref.ID, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(pending) > 0 {
		c.logger.InfoContext(ctx, "recovered pending records", slog.Int("pending", len(pending)), slog.Int("failed", len(errs)))
	}
	return errors.Join(errs...)
}

func (c *Catalog) recoverOne(ctx context.Context, p Pending) error {
	if p.Ref.Kind == KindArtifact || p.Ref.Kind == KindSignature {
		// Hold the artifact's lock so a concurrent RecordArtifact or
		// RecordSignature of the same name@version cannot append the leaf
		// as well.
		key, err := lockKey(p)
		if err != nil {
			return err
		}
		unlock, err := c.lock(ctx, key)
		if err != nil {
			return err
		}
		defer unlock()
	}
	return c.finish(ctx, p.Ref, &p.Entry)
}

// lockKey returns the lock key of a pending artifact from its leaf.
func lockKey(p Pending) (string, error) {
	e, err := tlog.ParseEntry(p.Entry.Leaf)
	if err != nil {
		return "", fmt.Errorf("%w: pending artifact %d: stored leaf: %v", ErrIntegrity, p.Ref.ID, err)
	}
	return e.Subject.Name + "@" + e.Subject.Version, nil
}

// Artifact returns the logged record of name@version, the evidence of its
// current envelope re-verified, or ErrNotFound.
func (c *Catalog) Artifact(ctx context.Context, name, version string) (*ArtifactRecord, error) {
	if name == "" || version == "" {
		return nil, fmt.Errorf("%w: give name and version, or digest", ErrInvalid)
	}
	if !artifact.ValidName(name) || !artifact.ValidVersion(version) {
		return nil, fmt.Errorf("%w: %q@%q is not an artifact name and version", ErrInvalid, trunc(name), trunc(version))
	}
	rec, err := c.store.Artifact(ctx, name, version)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: no artifact %s@%s", ErrNotFound, name, version)
	}
	if err != nil {
		return nil, unavailable("look up artifact", err)
	}
	if !rec.Entry.Logged() {
		return nil, fmt.Errorf("%w: artifact %s@%s is still being recorded; retry shortly", ErrNotFound, name, version)
	}
	if err := c.verifyCurrent(rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// ArtifactByDigest returns the logged record with this digest, the
// evidence of its current envelope re-verified. It fails with ErrNotFound if there is none, and
// with ErrInvalid if several name@versions have these bytes (ask by name
// and version then: channel and provenance differ between them).
func (c *Catalog) ArtifactByDigest(ctx context.Context, digest string) (*ArtifactRecord, error) {
	if !libdigest.Valid(digest) {
		return nil, fmt.Errorf("%w: digest %q: want sha256:<64 lowercase hex>", ErrInvalid, trunc(digest))
	}
	recs, err := c.store.LoggedArtifactsByDigest(ctx, digest)
	if err != nil {
		return nil, unavailable("look up digest", err)
	}
	switch len(recs) {
	case 0:
		return nil, fmt.Errorf("%w: no artifact with digest %s", ErrNotFound, digest)
	case 1:
	default:
		var names []string
		for _, r := range recs {
			names = append(names, r.Artifact.Name+"@"+r.Artifact.Version)
		}
		return nil, fmt.Errorf("%w: digest %s is recorded as %s; ask by name and version", ErrInvalid, digest, strings.Join(names, ", "))
	}
	if err := c.verifyCurrent(recs[0]); err != nil {
		return nil, err
	}
	return recs[0], nil
}

// verifyCurrent verifies the evidence of an artifact's current envelope.
func (c *Catalog) verifyCurrent(rec *ArtifactRecord) error {
	envelope, _, entry := rec.Current()
	typ := tlog.TypeArtifactPublished
	if rec.Resigned != nil {
		typ = tlog.TypeArtifactResigned
	}
	return c.verify(rec.ID, rec.Artifact, envelope, entry, typ)
}

// verify re-checks stored evidence before it leaves the catalog, so that a
// damaged or altered database row is refused rather than served: the entry
// is in the log, of type typ, about artifact a (row id) and envelope.
func (c *Catalog) verify(id int64, a Artifact, envelope []byte, entry *Entry, typ string) error {
	cp, err := tlog.OpenCheckpoint(entry.Checkpoint, c.verifier)
	if err == nil {
		err = tlog.VerifyInclusion(entry.Leaf, entry.Index, entry.Proof, cp)
	}
	var e *tlog.Entry
	if err == nil {
		e, err = tlog.ParseEntry(entry.Leaf)
	}
	if err == nil {
		sum := sha256.Sum256(envelope)
		if e.Type != typ || e.Subject != (tlog.Subject{Name: a.Name, Version: a.Version, Digest: a.Digest}) || e.EnvelopeSHA256 != hex.EncodeToString(sum[:]) {
			err = errors.New("stored record differs from its log entry")
		}
	}
	if err != nil {
		return fmt.Errorf("%w: artifact %s@%s (row %d): %v", ErrIntegrity, a.Name, a.Version, id, err)
	}
	return nil
}

// Checkpoint returns the log's latest signed checkpoint, verified.
func (c *Catalog) Checkpoint(ctx context.Context) ([]byte, error) {
	signed, _, err := c.log.Checkpoint(ctx)
	if err != nil {
		return nil, logError("read checkpoint", err)
	}
	return signed, nil
}

func unavailable(what string, err error) error {
	if errors.Is(err, ErrIntegrity) {
		return err
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}

func logError(what string, err error) error {
	if errors.Is(err, translog.ErrIntegrity) {
		return fmt.Errorf("%w: %s: %w", ErrIntegrity, what, err)
	}
	return unavailable(what, err)
}

// lock holds key in this process and, with a Locker, in every process
// sharing the store: no append of a pending row's leaf is in flight
// anywhere while another caller looks for it.
func (c *Catalog) lock(ctx context.Context, key string) (unlock func(), err error) {
	local := c.locks.lock(key)
	if c.locker == nil {
		return local, nil
	}
	remote, err := c.locker.Lock(ctx, key)
	if err != nil {
		local()
		return nil, unavailable("lock "+key, err)
	}
	return func() { remote(); local() }, nil
}

// keyLocks is a set of mutexes by key, created on demand and dropped when
// unused.
type keyLocks struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

func (k *keyLocks) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
