// Package storetest is the conformance suite every catalog metadata back end
// (catalog.Store) passes, run against the real database.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// Store is what the suite needs of a back end beyond catalog.Store.
type Store interface {
	catalog.Store
	// Signatures returns every signature of an artifact in the order they
	// were recorded (the audit history of its envelopes).
	Signatures(ctx context.Context, artifactID int64) ([]*catalog.Signature, error)
	Close() error
}

// Opener opens a store over one database; every call opens another store
// (another connection pool, as another catalog process would) over the same
// database. The store is closed when the test ends; closing it earlier is
// allowed.
type Opener func(t *testing.T) Store

// Options describe the back end under test.
type Options struct {
	// NewDatabase returns an opener of a new, empty database. It is called
	// once per subtest.
	NewDatabase func(t *testing.T) Opener
}

// Run runs the suite.
func Run(t *testing.T, o Options) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"artifact lifecycle", artifactLifecycle},
		{"events", events},
		{"signatures", signatures},
		{"list artifacts", listArtifacts},
		{"search", search},
		{"search is not SQL", searchHostile},
		{"deployments", deployments},
		{"advisories", advisories},
		{"advisory lookups", advisoryLookups},
		{"lineage", lineage},
		{"lineage walk is bounded", lineageWide},
		{"entries by subject", entriesBySubject},
		{"two stores bind name@version once", bindOnce},
		{"two stores write and read at once", sharedReadWrite},
		{"index events from the log", indexEvents},
		{"two stores index the same events", indexEventsTwoStores},
		{"sboms", sboms},
		{"two stores attach one SBOM once", sbomOnce},
		{"a large batch of events is stored once each", indexEventsLargeBatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, o.NewDatabase(t)) })
	}
}

var (
	d1 = "sha256:" + strings.Repeat("a", 64)
	d2 = "sha256:" + strings.Repeat("b", 64)
	d3 = "sha256:" + strings.Repeat("c", 64)

	keyA = strings.Repeat("a", 64)
	keyB = strings.Repeat("b", 64)
	keyC = strings.Repeat("c", 64)
)

// created is a time with nanoseconds: back ends keep them.
var created = time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)

func record(version, digest string) *catalog.ArtifactRecord {
	return &catalog.ArtifactRecord{
		Artifact: catalog.Artifact{Name: "app", Version: version, Digest: digest, Size: 3, Channel: "stable",
			BuilderID: "spiffe://t/builder/ci", SourceRepo: "r", SourceCommit: "c", CreatedAt: created},
		Envelope: []byte(`{"e":1}`),
		Entry:    catalog.Entry{Leaf: []byte("leaf-" + version), SearchFrom: 7},
	}
}

// logged inserts r and marks it logged at index, returning its ID.
func logged(t *testing.T, s catalog.Store, r *catalog.ArtifactRecord, index uint64) int64 {
	t.Helper()
	id, err := s.InsertArtifact(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetLogged(t.Context(), catalog.Ref{Kind: catalog.KindArtifact, ID: id}, index, nil, []byte("cp")); err != nil {
		t.Fatal(err)
	}
	return id
}

func signature(artifactID int64, keyID, leaf string) *catalog.Signature {
	return &catalog.Signature{ArtifactID: artifactID, Envelope: []byte(`{"sig":"` + leaf + `"}`), KeyID: keyID,
		Actor: "spiffe://t/admin/ops", CreatedAt: time.Date(2025, 2, 3, 4, 5, 6, 7000, time.UTC),
		Entry: catalog.Entry{Leaf: []byte(leaf), SearchFrom: 3}}
}

func artifactLifecycle(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	want := record("1.0.0", d1)
	id, err := s.InsertArtifact(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	want.ID = id
	if _, err := s.InsertArtifact(ctx, record("1.0.0", d2)); !errors.Is(err, catalog.ErrAlreadyExists) {
		t.Errorf("duplicate name@version: got %v, want ErrAlreadyExists", err)
	}
	got, err := s.Artifact(ctx, "app", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pending artifact (-want +got):\n%s", diff)
	}
	if recs, err := s.LoggedArtifactsByDigest(ctx, d1); err != nil || len(recs) != 0 {
		t.Errorf("pending artifact listed by digest: %v, %v", recs, err)
	}
	pending, err := s.Pending(ctx)
	if err != nil || len(pending) != 1 || pending[0].Ref != (catalog.Ref{Kind: catalog.KindArtifact, ID: id}) || pending[0].Entry.SearchFrom != 7 ||
		!bytes.Equal(pending[0].Entry.Leaf, want.Entry.Leaf) {
		t.Fatalf("Pending = %+v, %v", pending, err)
	}

	ref := catalog.Ref{Kind: catalog.KindArtifact, ID: id}
	if err := s.SetSequenced(ctx, ref, 41); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Pending(ctx); len(p) != 1 || !p[0].Entry.Sequenced || p[0].Entry.Index != 41 {
		t.Errorf("after SetSequenced, Pending = %+v", p)
	}
	proof := [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)}
	if err := s.SetLogged(ctx, ref, 42, proof, []byte("checkpoint")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLogged(ctx, ref, 42, [][]byte{{1}}, []byte("checkpoint")); err == nil {
		t.Error("SetLogged with a short hash: want an error")
	}
	if err := s.SetLogged(ctx, ref, 42, nil, nil); err == nil {
		t.Error("SetLogged without a checkpoint: want an error")
	}
	if err := s.SetLogged(ctx, catalog.Ref{Kind: catalog.KindArtifact, ID: 999}, 1, nil, []byte("c")); err == nil {
		t.Error("SetLogged of a missing row: want an error")
	}
	if err := s.SetLogged(ctx, catalog.Ref{Kind: "other", ID: id}, 1, nil, []byte("c")); err == nil {
		t.Error("SetLogged of an unknown kind: want an error")
	}
	// Another row cannot take a log index that is taken.
	other, err := s.InsertArtifact(ctx, record("1.0.1", d1))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetLogged(ctx, catalog.Ref{Kind: catalog.KindArtifact, ID: other}, 42, nil, []byte("c")); err == nil {
		t.Error("two artifacts at one log index: want an error")
	}
	s.Close()

	// Everything survives reopening, and migrating again is a no-op.
	s = open(t)
	want.Entry = catalog.Entry{Leaf: want.Entry.Leaf, SearchFrom: 7, Sequenced: true, Index: 42, Proof: proof, Checkpoint: []byte("checkpoint")}
	recs, err := s.LoggedArtifactsByDigest(ctx, d1)
	if err != nil || len(recs) != 1 {
		t.Fatalf("LoggedArtifactsByDigest = %v, %v", recs, err)
	}
	if diff := cmp.Diff(want, recs[0]); diff != "" {
		t.Errorf("logged artifact (-want +got):\n%s", diff)
	}
	if p, err := s.Pending(ctx); err != nil || len(p) != 1 || p[0].Ref.ID != other {
		t.Errorf("Pending after SetLogged = %+v, %v; want only %d", p, err, other)
	}
	if _, err := s.Artifact(ctx, "app", "2.0.0"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("missing artifact: got %v, want ErrNotFound", err)
	}
}

func events(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	e := &catalog.Event{Type: "a.b", Actor: "spiffe://t/service/x", SubjectDigest: d1, Details: []byte(`{}`), CreatedAt: created, Entry: catalog.Entry{Leaf: []byte("e1")}}
	id1, err := s.InsertEvent(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := s.InsertEvent(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if id2 <= id1 {
		t.Errorf("event IDs %d then %d: want increasing", id1, id2)
	}
	if err := s.DeleteEvent(ctx, id1); err != nil {
		t.Fatal(err)
	}
	ref := catalog.Ref{Kind: catalog.KindEvent, ID: id2}
	if p, err := s.Pending(ctx); err != nil || len(p) != 1 || p[0].Ref != ref {
		t.Fatalf("Pending = %+v, %v", p, err)
	}
	if err := s.SetLogged(ctx, ref, 0, nil, []byte("cp")); err != nil {
		t.Fatal(err)
	}
	if p, err := s.Pending(ctx); err != nil || len(p) != 0 {
		t.Errorf("Pending = %+v, %v", p, err)
	}
	// A logged event is never deleted.
	if err := s.DeleteEvent(ctx, id2); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLogged(ctx, ref, 0, nil, []byte("cp")); err != nil {
		t.Errorf("logged event gone after DeleteEvent: %v", err)
	}
}

func list(t *testing.T, s catalog.Store, keyID string, after int64, limit int) []catalog.Listed {
	t.Helper()
	l, err := s.ListArtifacts(t.Context(), keyID, after, limit)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func signatures(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	rec := record("1.0.0", d1)
	rec.KeyID = keyA
	id := logged(t, s, rec, 0)

	first := signature(id, keyB, "resign-1")
	sid, err := s.InsertSignature(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	first.ID = sid
	// A pending signature is not current.
	got, err := s.Artifact(ctx, "app", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if got.Resigned != nil || got.KeyID != keyA {
		t.Errorf("with a pending signature: Resigned = %+v, KeyID %q; want nil, %q", got.Resigned, got.KeyID, keyA)
	}
	if _, err := s.InsertSignature(ctx, signature(id, keyC, "resign-other")); !errors.Is(err, catalog.ErrAlreadyExists) {
		t.Errorf("second pending signature: got %v, want ErrAlreadyExists", err)
	}
	p, err := s.PendingSignature(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(first, p); diff != "" {
		t.Errorf("PendingSignature (-want +got):\n%s", diff)
	}
	pending, err := s.Pending(ctx)
	if err != nil || len(pending) != 1 || pending[0].Ref != (catalog.Ref{Kind: catalog.KindSignature, ID: sid}) {
		t.Fatalf("Pending = %+v, %v", pending, err)
	}
	if l := list(t, s, keyB, 0, 10); len(l) != 0 {
		t.Errorf("listed by a pending signature's key: %+v", l)
	}
	if l := list(t, s, keyA, 0, 10); len(l) != 1 || !l[0].SignedAt.Equal(created) {
		t.Errorf("with a pending signature, listed by the recorded key: %+v; want signed at its created_at %v", l, created)
	}

	// Logged, it is current, atomically.
	proof := [][]byte{bytes.Repeat([]byte{9}, 32)}
	if err := s.SetLogged(ctx, catalog.Ref{Kind: catalog.KindSignature, ID: sid}, 5, proof, []byte("cp5")); err != nil {
		t.Fatal(err)
	}
	first.Entry = catalog.Entry{Leaf: first.Entry.Leaf, SearchFrom: 3, Sequenced: true, Index: 5, Proof: proof, Checkpoint: []byte("cp5")}
	if _, err := s.PendingSignature(ctx, id); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("PendingSignature after SetLogged: got %v, want ErrNotFound", err)
	}
	got, err = s.Artifact(ctx, "app", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(first, got.Resigned); diff != "" || got.KeyID != keyA || string(got.Envelope) != string(rec.Envelope) {
		t.Errorf("current re-signature (-want +got):\n%s\nrecorded key id %q, envelope %s", diff, got.KeyID, got.Envelope)
	}
	if l := list(t, s, keyB, 0, 10); len(l) != 1 || l[0].ID != id || l[0].KeyID != keyB || !l[0].SignedAt.Equal(first.CreatedAt) {
		t.Errorf("listed by the new key: %+v; want signed at the re-signature's %v", l, first.CreatedAt)
	}
	if l := list(t, s, keyA, 0, 10); len(l) != 0 {
		t.Errorf("still listed by the replaced key: %+v", l)
	}

	second := signature(id, keyC, "resign-2")
	second.CreatedAt = first.CreatedAt.Add(24 * time.Hour)
	if second.ID, err = s.InsertSignature(ctx, second); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLogged(ctx, catalog.Ref{Kind: catalog.KindSignature, ID: second.ID}, 6, nil, []byte("cp6")); err != nil {
		t.Fatal(err)
	}
	// Marking an older signature again does not make it current.
	if err := s.SetLogged(ctx, catalog.Ref{Kind: catalog.KindSignature, ID: sid}, 5, proof, []byte("cp5")); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = open(t)
	recs, err := s.LoggedArtifactsByDigest(ctx, d1)
	if err != nil || len(recs) != 1 || recs[0].Resigned == nil || recs[0].Resigned.ID != second.ID {
		t.Fatalf("LoggedArtifactsByDigest = %+v, %v; want the second signature current", recs, err)
	}
	if _, key, e := recs[0].Current(); key != keyC || e.Index != 6 {
		t.Errorf("Current = key %q, index %d; want %q, 6", key, e.Index, keyC)
	}
	// Signed when the current (latest logged) re-signature was recorded,
	// whichever was marked logged last.
	if l := list(t, s, keyC, 0, 10); len(l) != 1 || !l[0].SignedAt.Equal(second.CreatedAt) {
		t.Errorf("listed by the second key: %+v; want signed at %v", l, second.CreatedAt)
	}
	byDigest, err := s.LoggedArtifactsByDigests(ctx, []string{d1})
	if err != nil || len(byDigest) != 1 || byDigest[0].KeyID != keyC || !byDigest[0].SignedAt.Equal(second.CreatedAt) {
		t.Errorf("LoggedArtifactsByDigests = %+v, %v; want signed by %s at %v", byDigest, err, keyC, second.CreatedAt)
	}
	history, err := s.Signatures(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var leaves []string
	for _, h := range history {
		leaves = append(leaves, string(h.Entry.Leaf))
	}
	if diff := cmp.Diff([]string{"resign-1", "resign-2"}, leaves); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	if _, err := s.InsertSignature(ctx, signature(999, keyC, "orphan")); err == nil {
		t.Error("signature of a missing artifact: want an error")
	}
}

func listArtifacts(t *testing.T, open Opener) {
	s := open(t)
	var ids []int64
	for i := range 5 {
		r := record(fmt.Sprintf("1.0.%d", i), d1)
		r.KeyID = keyA
		if i%2 == 1 {
			r.KeyID = keyB
		}
		ids = append(ids, logged(t, s, r, uint64(i)))
	}
	// Pending artifacts are not listed.
	if _, err := s.InsertArtifact(t.Context(), record("9.9.9", d2)); err != nil {
		t.Fatal(err)
	}
	versions := func(l []catalog.Listed) []string {
		var out []string
		for _, x := range l {
			out = append(out, x.Artifact.Version+" "+x.KeyID[:1])
		}
		return out
	}
	tests := []struct {
		name  string
		key   string
		after int64
		limit int
		want  []string
	}{
		{"all", "", 0, 10, []string{"1.0.0 a", "1.0.1 b", "1.0.2 a", "1.0.3 b", "1.0.4 a"}},
		{"limit", "", 0, 2, []string{"1.0.0 a", "1.0.1 b"}},
		{"after", "", ids[1], 2, []string{"1.0.2 a", "1.0.3 b"}},
		{"by key", keyA, 0, 10, []string{"1.0.0 a", "1.0.2 a", "1.0.4 a"}},
		{"by key after", keyA, ids[2], 10, []string{"1.0.4 a"}},
		{"unknown key", keyC, 0, 10, nil},
		{"past the end", "", ids[4], 10, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, versions(list(t, s, tt.key, tt.after, tt.limit))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	l := list(t, s, "", 0, 1)
	want := record("1.0.0", d1).Artifact
	if len(l) != 1 || l[0].ID != ids[0] || !cmp.Equal(want, l[0].Artifact) {
		t.Errorf("listed artifact = %+v, want %+v", l, want)
	}
}
