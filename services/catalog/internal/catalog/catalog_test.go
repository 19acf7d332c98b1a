package catalog_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlite"
	"github.com/custody-dev/custody/services/catalog/internal/translog"
)

const (
	publisher  = "spiffe://custody.test/service/publisher"
	gatekeeper = "spiffe://custody.test/service/gatekeeper"
	builder    = "spiffe://custody.test/builder/ci"
)

var td = spiffeid.RequireTrustDomainFromString("custody.test")

// faultyStore fails SetLogged on demand: the process "crashed" after the
// log append and before the database commit.
type faultyStore struct {
	catalog.Store
	failSetLogged bool
	// failIndex fails IndexEvents: the process "crashed" after the event
	// was sequenced and before the indexer stored it.
	failIndex bool
}

func (s *faultyStore) IndexEvents(ctx context.Context, events []*catalog.Event, size uint64) error {
	if s.failIndex {
		return errors.New("disk I/O error")
	}
	return s.Store.IndexEvents(ctx, events, size)
}

func (s *faultyStore) SetLogged(ctx context.Context, ref catalog.Ref, index uint64, proof [][]byte, cp []byte) error {
	if s.failSetLogged {
		return errors.New("disk I/O error")
	}
	return s.Store.SetLogged(ctx, ref, index, proof, cp)
}

// faultyLog makes Append fail in one of the ways a real one can.
type faultyLog struct {
	catalog.Log
	mode string // "refuse": nothing appended; "unproved": appended, no proof
}

func (l *faultyLog) Append(ctx context.Context, leaf []byte) (*translog.Proved, error) {
	switch l.mode {
	case "refuse":
		return nil, fmt.Errorf("%w: pushback", translog.ErrUnavailable)
	case "unproved":
		p, err := l.Log.Append(ctx, leaf)
		if err != nil {
			return nil, err
		}
		return nil, &translog.Sequenced{Index: p.Index, Err: context.DeadlineExceeded}
	}
	return l.Log.Append(ctx, leaf)
}

func (l *faultyLog) Sequence(ctx context.Context, leaf []byte) (uint64, error) {
	if l.mode == "refuse" {
		return 0, fmt.Errorf("%w: pushback", translog.ErrUnavailable)
	}
	return l.Log.Sequence(ctx, leaf)
}

type fixture struct {
	t     *testing.T
	store *sqlite.Store
	log   *translog.Log
	vkey  string
	// db is the store's database file, for tampering with rows.
	db string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	skey, _, err := tlog.GenerateKey("custody.test/log")
	if err != nil {
		t.Fatal(err)
	}
	store, err := sqlite.Open(t.Context(), filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	tl, err := translog.Open(t.Context(), translog.Config{Dir: filepath.Join(dir, "log"), SignerKey: skey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close(context.Background()) })
	return &fixture{t: t, store: store, log: tl, vkey: tl.VerifierKey(), db: filepath.Join(dir, "catalog.db")}
}

// catalog returns a catalog over the fixture's store and log, through
// the given fault injectors (nil: none).
func (f *fixture) catalog(s catalog.Store, l catalog.Log) *catalog.Catalog {
	if s == nil {
		s = f.store
	}
	if l == nil {
		l = f.log
	}
	c := catalog.New(catalog.Config{Store: s, Log: l, VerifierKey: f.vkey, TrustDomain: td})
	f.t.Cleanup(c.Close)
	return c
}

func (f *fixture) size(t *testing.T) uint64 {
	t.Helper()
	n, err := f.log.Size(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func artifact(version, content string) catalog.Artifact {
	sum := sha256.Sum256([]byte(content))
	return catalog.Artifact{Name: "app", Version: version, Digest: "sha256:" + hex.EncodeToString(sum[:]),
		Size: int64(len(content)), Channel: "stable", BuilderID: builder}
}

// envelope is an unsigned-in-effect envelope over a provenance statement
// about a. For the invalid records of validation tests, whose envelopes are
// never reached, it falls back to a placeholder statement.
func envelope(a catalog.Artifact) []byte {
	statement, err := attest.NewProvenance(attest.Artifact{Name: a.Name, Version: a.Version, Digest: a.Digest,
		Channel: a.Channel, BuilderID: a.BuilderID, SourceRepo: a.SourceRepo, SourceCommit: a.SourceCommit})
	if err != nil {
		statement, err = attest.NewProvenance(attest.Artifact{Name: "placeholder", Version: "0", Digest: "sha256:" + strings.Repeat("0", 64),
			Channel: "dev", BuilderID: builder})
	}
	if err != nil {
		panic(err)
	}
	b, err := attest.SignEnvelope(attest.PayloadType, statement, "k", func([]byte) ([]byte, error) { return []byte("sig"), nil })
	if err != nil {
		panic(err)
	}
	return b
}

func TestRecoverAfterCrashes(t *testing.T) {
	tests := []struct {
		name         string
		store        func(catalog.Store) catalog.Store
		log          func(catalog.Log) catalog.Log
		appendedOnce bool // the failed call had already put the leaf in the log
	}{
		{
			name:         "crash after append, before the database commit",
			store:        func(s catalog.Store) catalog.Store { return &faultyStore{Store: s, failSetLogged: true} },
			appendedOnce: true,
		},
		{
			name: "log refused the append",
			log:  func(l catalog.Log) catalog.Log { return &faultyLog{Log: l, mode: "refuse"} },
		},
		{
			name:         "appended, gave up waiting for the checkpoint",
			log:          func(l catalog.Log) catalog.Log { return &faultyLog{Log: l, mode: "unproved"} },
			appendedOnce: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, how := range []string{"recover at start", "client retries"} {
				t.Run(how, func(t *testing.T) {
					f := newFixture(t)
					var s catalog.Store
					var l catalog.Log
					if tt.store != nil {
						s = tt.store(f.store)
					}
					if tt.log != nil {
						l = tt.log(f.log)
					}
					a := artifact("1.0.0", "bytes")
					_, _, err := f.catalog(s, l).RecordArtifact(t.Context(), publisher, a, envelope(a))
					if !errors.Is(err, catalog.ErrUnavailable) {
						t.Fatalf("faulty RecordArtifact: got %v, want ErrUnavailable", err)
					}
					want := uint64(0)
					if tt.appendedOnce {
						want = 1
					}
					if got := f.size(t); got != want {
						t.Fatalf("log size after the failure = %d, want %d", got, want)
					}
					// Nothing half-done is served.
					if _, err := f.catalog(nil, nil).Artifact(t.Context(), "app", "1.0.0"); !errors.Is(err, catalog.ErrNotFound) {
						t.Errorf("pending artifact: got %v, want ErrNotFound", err)
					}

					healthy := f.catalog(nil, nil) // a restarted process
					switch how {
					case "recover at start":
						if err := healthy.Recover(t.Context()); err != nil {
							t.Fatalf("Recover: %v", err)
						}
					case "client retries":
						_, created, err := healthy.RecordArtifact(t.Context(), publisher, a, envelope(a))
						if err != nil || !created {
							t.Fatalf("retry: created=%v, %v", created, err)
						}
					}
					if got := f.size(t); got != 1 {
						t.Errorf("log size after recovery = %d, want exactly 1 entry", got)
					}
					rec, err := healthy.Artifact(t.Context(), "app", "1.0.0")
					if err != nil {
						t.Fatalf("Artifact after recovery: %v", err)
					}
					cp, err := tlog.OpenCheckpoint(rec.Entry.Checkpoint, f.vkey)
					if err != nil {
						t.Fatal(err)
					}
					if err := tlog.VerifyInclusion(rec.Entry.Leaf, rec.Entry.Index, rec.Entry.Proof, cp); err != nil {
						t.Error(err)
					}
					if _, created, err := healthy.RecordArtifact(t.Context(), publisher, a, envelope(a)); err != nil || created {
						t.Errorf("record after recovery: created=%v, %v; want the existing record", created, err)
					}
					if pending, err := f.store.Pending(t.Context()); err != nil || len(pending) != 0 {
						t.Errorf("pending rows after recovery: %v, %v", pending, err)
					}
				})
			}
		})
	}
}

func TestPendingClaimsNameVersion(t *testing.T) {
	f := newFixture(t)
	refusing := f.catalog(nil, &faultyLog{Log: f.log, mode: "refuse"})
	if _, _, err := refusing.RecordArtifact(t.Context(), publisher, artifact("1.0.0", "a"), envelope(artifact("1.0.0", "a"))); !errors.Is(err, catalog.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	_, _, err := f.catalog(nil, nil).RecordArtifact(t.Context(), publisher, artifact("1.0.0", "b"), envelope(artifact("1.0.0", "b")))
	if !errors.Is(err, catalog.ErrAlreadyExists) {
		t.Errorf("other digest while pending: got %v, want ErrAlreadyExists", err)
	}
}

func TestEventRecovery(t *testing.T) {
	f := newFixture(t)
	subject := "sha256:" + strings.Repeat("e", 64)
	// Refused outright: nothing is logged, now or later.
	refusing := f.catalog(nil, &faultyLog{Log: f.log, mode: "refuse"})
	if _, err := refusing.AppendEvent(t.Context(), gatekeeper, tlog.TypeAdmissionDecided, subject, nil); !errors.Is(err, catalog.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	// Sequenced, then the database failed before the indexer stored the
	// event: the caller was acknowledged once sequenced. A caller that
	// waits for a proof gets Unavailable (its event is in the log, or was
	// refused before it once the indexer saw the database fail); once the
	// failure is known, events are refused before the log. Recover stores
	// every event the log holds, once.
	crashing := f.catalog(&faultyStore{Store: f.store, failIndex: true}, nil)
	acked, err := crashing.SequenceEvent(t.Context(), gatekeeper, tlog.TypeAdmissionDecided, subject, []byte(`{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := crashing.AppendEvent(t.Context(), gatekeeper, tlog.TypeAdmissionDecided, subject, []byte(`{"n":2}`)); !errors.Is(err, catalog.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	logged := f.size(t)
	if _, err := crashing.SequenceEvent(t.Context(), gatekeeper, tlog.TypeAdmissionDecided, subject, []byte(`{"n":3}`)); !errors.Is(err, catalog.ErrUnavailable) {
		t.Fatalf("with the database failing: got %v, want ErrUnavailable", err)
	}
	if got := f.size(t); got != logged || logged < 1 || logged > 2 {
		t.Fatalf("log size %d, then %d: want 1 or 2, unchanged once the database is known to fail", logged, got)
	}
	crashing.Close()
	if got, _, err := f.catalog(nil, nil).ListEvents(t.Context(), subject, 0, ""); err != nil || len(got) != 0 {
		t.Fatalf("before recovery the store lists %d events (%v), want 0", len(got), err)
	}
	for range 2 { // recovering twice stores nothing twice
		if err := f.catalog(nil, nil).Recover(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := f.catalog(nil, nil).ListEvents(t.Context(), subject, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(got)) != logged || got[0].Index != 0 || !bytes.Equal(got[0].Leaf, acked.Entry.Leaf) || acked.Entry.Index != 0 {
		t.Errorf("after recovery the store lists %+v, want the %d logged events, the acknowledged one at 0", got, logged)
	}
	if n, err := f.store.IndexedSize(t.Context()); err != nil || n != logged {
		t.Errorf("indexed size %d (%v), want %d", n, err, logged)
	}
	if pending, err := f.store.Pending(t.Context()); err != nil || len(pending) != 0 {
		t.Errorf("pending rows after recovery: %v, %v", pending, err)
	}
}

// TestProvedEventsAreIndexed: an event acknowledged with its proof is in
// the store at once, with that proof, and a run of events with artifacts
// between them is stored in log order, each once.
func TestProvedEventsAreIndexed(t *testing.T) {
	f := newFixture(t)
	c := f.catalog(nil, nil)
	a := record(t, c, "1.0.0", "bytes")
	var want []uint64
	for i := range 5 {
		e, err := c.AppendEvent(t.Context(), gatekeeper, tlog.TypeAdmissionDecided, a.Digest, fmt.Appendf(nil, `{"n":%d}`, i))
		if err != nil {
			t.Fatal(err)
		}
		if len(e.Entry.Checkpoint) == 0 || len(e.Entry.Proof) == 0 && e.Entry.Index > 0 {
			t.Fatalf("event %d acknowledged without its proof: %+v", i, e.Entry)
		}
		want = append(want, e.Entry.Index)
		record(t, c, fmt.Sprintf("1.0.%d", i+1), fmt.Sprint(i))
	}
	got, _, err := c.ListEvents(t.Context(), a.Digest, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	var idx []uint64
	for _, e := range got {
		idx = append(idx, e.Index)
	}
	// The publication of a itself comes first.
	if len(idx) != len(want)+1 || fmt.Sprint(idx[1:]) != fmt.Sprint(want) {
		t.Errorf("listed indices %v, want %v after the publication", idx, want)
	}
}

func TestTamperedEvidenceIsRefused(t *testing.T) {
	f := newFixture(t)
	c := f.catalog(nil, nil)
	rec, _, err := c.RecordArtifact(t.Context(), publisher, artifact("1.0.0", "a"), envelope(artifact("1.0.0", "a")))
	if err != nil {
		t.Fatal(err)
	}
	bad := [][]byte{make([]byte, 32)}
	if err := f.store.SetLogged(t.Context(), catalog.Ref{Kind: catalog.KindArtifact, ID: rec.ID}, rec.Entry.Index, bad, rec.Entry.Checkpoint); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Artifact(t.Context(), "app", "1.0.0"); !errors.Is(err, catalog.ErrIntegrity) {
		t.Errorf("tampered proof: got %v, want ErrIntegrity", err)
	}
	if _, err := c.ArtifactByDigest(t.Context(), rec.Artifact.Digest); !errors.Is(err, catalog.ErrIntegrity) {
		t.Errorf("tampered proof by digest: got %v, want ErrIntegrity", err)
	}
}

func TestRecordUsesCatalogTimeAndActor(t *testing.T) {
	f := newFixture(t)
	now := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	c := catalog.New(catalog.Config{Store: f.store, Log: f.log, VerifierKey: f.vkey, TrustDomain: td, Now: func() time.Time { return now }})
	a := artifact("1.0.0", "a")
	a.CreatedAt = time.Unix(1, 0) // a client's claim is ignored
	rec, _, err := c.RecordArtifact(t.Context(), publisher, a, envelope(a))
	if err != nil {
		t.Fatal(err)
	}
	e, err := tlog.ParseEntry(rec.Entry.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Time.Equal(now) || !rec.Artifact.CreatedAt.Equal(now) || e.Actor != publisher {
		t.Errorf("time %v / created_at %v / actor %s; want %v and %s", e.Time, rec.Artifact.CreatedAt, e.Actor, now, publisher)
	}
}

func TestValidation(t *testing.T) {
	good := artifact("1.0.0", "a")
	tests := []struct {
		name   string
		modify func(*catalog.Artifact)
		want   string
	}{
		{"empty name", func(a *catalog.Artifact) { a.Name = "" }, "name"},
		{"dot dot", func(a *catalog.Artifact) { a.Name = "a/../b" }, "name"},
		{"trailing slash", func(a *catalog.Artifact) { a.Name = "a/" }, "name"},
		{"at sign", func(a *catalog.Artifact) { a.Name = "a@b" }, "name"},
		{"long name", func(a *catalog.Artifact) { a.Name = strings.Repeat("a", 201) }, "name"},
		{"version space", func(a *catalog.Artifact) { a.Version = "1 0" }, "version"},
		{"version slash", func(a *catalog.Artifact) { a.Version = "1/0" }, "version"},
		{"upper digest", func(a *catalog.Artifact) { a.Digest = strings.ToUpper(a.Digest) }, "digest"},
		{"negative size", func(a *catalog.Artifact) { a.Size = -1 }, "size"},
		{"channel", func(a *catalog.Artifact) { a.Channel = "pro d" }, "channel"},
		{"builder not SPIFFE", func(a *catalog.Artifact) { a.BuilderID = "https://ci" }, "builder_id"},
		{"commit control", func(a *catalog.Artifact) { a.SourceCommit = "ab\ncd" }, "source_commit"},
	}
	f := newFixture(t)
	c := f.catalog(nil, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := good
			tt.modify(&a)
			_, _, err := c.RecordArtifact(t.Context(), publisher, a, envelope(a))
			if !errors.Is(err, catalog.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
	for _, ok := range []string{"app", "team/app", "a.b_c-d", "A1"} {
		if !catalog.ValidName(ok) {
			t.Errorf("ValidName(%q) = false", ok)
		}
	}
	for _, ok := range []string{"1.0.0", "1.0.0-rc.1+build.5", "v2"} {
		if !catalog.ValidVersion(ok) {
			t.Errorf("ValidVersion(%q) = false", ok)
		}
	}
	if f.size(t) != 0 {
		t.Error("invalid requests reached the log")
	}
}

// TestIndexerRefusesForeignLeaves: a log entry the catalog did not write
// (it does not parse as a log entry) stops indexing with ErrIntegrity; it
// is neither stored nor skipped, so nothing after it is indexed either.
func TestIndexerRefusesForeignLeaves(t *testing.T) {
	f := newFixture(t)
	if _, err := f.log.Sequence(t.Context(), []byte("not an entry")); err != nil {
		t.Fatal(err)
	}
	c := f.catalog(nil, nil)
	if _, err := c.SequenceEvent(t.Context(), gatekeeper, tlog.TypeAdmissionDecided, "", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := f.catalog(nil, nil).Recover(t.Context()); !errors.Is(err, catalog.ErrIntegrity) {
		t.Errorf("Recover over a foreign leaf: got %v, want ErrIntegrity", err)
	}
	if n, err := f.store.IndexedSize(t.Context()); err != nil || n != 0 {
		t.Errorf("indexed size %d (%v), want 0: nothing at or after the foreign leaf is indexed", n, err)
	}
}

// recordingStore keeps a copy of every event IndexEvents stores.
type recordingStore struct {
	catalog.Store
	mu     sync.Mutex
	events []catalog.Event
}

func (s *recordingStore) IndexEvents(ctx context.Context, events []*catalog.Event, size uint64) error {
	if err := s.Store.IndexEvents(ctx, events, size); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range events {
		s.events = append(s.events, *e)
	}
	return nil
}

// The indexer stores the events this catalog has just sequenced without
// parsing their leaves again; what it stores must be what a catalog that
// parses the same leaves (after a restart, with a new store) stores.
func TestIndexedEventsMatchTheirLeaves(t *testing.T) {
	f := newFixture(t)
	first := &recordingStore{Store: f.store}
	c := f.catalog(first, nil)
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sub := ""
			if i%2 == 0 {
				sub = "sha256:" + strings.Repeat(fmt.Sprintf("%x", i%16), 64)
			}
			if _, err := c.SequenceEvent(t.Context(), gatekeeper, tlog.TypeAdmissionDecided, sub, fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := c.Recover(t.Context()); err != nil { // waits until all is indexed
		t.Fatal(err)
	}
	other, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "other.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	second := &recordingStore{Store: other}
	if err := f.catalog(second, nil).Recover(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(first.events) != n || len(second.events) != n {
		t.Fatalf("%d events stored by the catalog that sequenced them, %d by one that parsed them, want %d each", len(first.events), len(second.events), n)
	}
	byIndex := map[uint64]catalog.Event{}
	for _, e := range second.events {
		byIndex[e.Entry.Index] = e
	}
	for _, got := range first.events {
		want, ok := byIndex[got.Entry.Index]
		if !ok {
			t.Errorf("event %d stored by one catalog only", got.Entry.Index)
			continue
		}
		parsed, err := tlog.ParseEntry(got.Entry.Leaf)
		if err != nil {
			t.Fatalf("event %d: %v", got.Entry.Index, err)
		}
		if got.Type != want.Type || got.Actor != want.Actor || got.SubjectDigest != want.SubjectDigest ||
			!got.CreatedAt.Equal(want.CreatedAt) || got.CreatedAt.Location() != time.UTC || !bytes.Equal(got.Details, want.Details) ||
			!bytes.Equal(got.Entry.Leaf, want.Entry.Leaf) || got.Entry.SearchFrom != want.Entry.SearchFrom || !got.Entry.Sequenced ||
			got.SubjectDigest != parsed.Subject.Digest || !got.CreatedAt.Equal(parsed.Time) {
			t.Errorf("event %d stored as\n%+v\nby the catalog that sequenced it, as\n%+v\nby one that parsed its leaf", got.Entry.Index, got, want)
		}
		if len(got.Entry.Checkpoint) == 0 {
			t.Errorf("event %d stored without its checkpoint", got.Entry.Index)
		}
	}
}
