package sqlite_test

import (
	"bytes"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlite"
)

func open(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func record(version, digest string) *catalog.ArtifactRecord {
	return &catalog.ArtifactRecord{
		Artifact: catalog.Artifact{Name: "app", Version: version, Digest: digest, Size: 3, Channel: "stable",
			BuilderID: "spiffe://t/builder/ci", SourceRepo: "r", SourceCommit: "c", CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)},
		Envelope: []byte(`{"e":1}`),
		Entry:    catalog.Entry{Leaf: []byte("leaf-" + version), SearchFrom: 7},
	}
}

var (
	d1 = "sha256:" + string(bytes.Repeat([]byte("a"), 64))
	d2 = "sha256:" + string(bytes.Repeat([]byte("b"), 64))
)

func TestArtifactLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	s := open(t, path)
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
	if err != nil || len(pending) != 1 || pending[0].Ref != (catalog.Ref{Kind: catalog.KindArtifact, ID: id}) || pending[0].Entry.SearchFrom != 7 {
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
	if err := s.SetLogged(ctx, catalog.Ref{Kind: catalog.KindArtifact, ID: 999}, 1, nil, []byte("c")); err == nil {
		t.Error("SetLogged of a missing row: want an error")
	}
	s.Close()

	// Everything survives reopening, and migrating again is a no-op.
	s = open(t, path)
	want.Entry = catalog.Entry{Leaf: want.Entry.Leaf, SearchFrom: 7, Sequenced: true, Index: 42, Proof: proof, Checkpoint: []byte("checkpoint")}
	recs, err := s.LoggedArtifactsByDigest(ctx, d1)
	if err != nil || len(recs) != 1 {
		t.Fatalf("LoggedArtifactsByDigest = %v, %v", recs, err)
	}
	if diff := cmp.Diff(want, recs[0]); diff != "" {
		t.Errorf("logged artifact (-want +got):\n%s", diff)
	}
	if p, err := s.Pending(ctx); err != nil || len(p) != 0 {
		t.Errorf("Pending after SetLogged = %v, %v", p, err)
	}
	if _, err := s.Artifact(ctx, "app", "2.0.0"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("missing artifact: got %v, want ErrNotFound", err)
	}
}

func TestEvents(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "catalog.db"))
	ctx := t.Context()
	e := &catalog.Event{Type: "a.b", Actor: "spiffe://t/service/x", Details: []byte(`{}`), CreatedAt: time.Now(), Entry: catalog.Entry{Leaf: []byte("e1")}}
	id1, err := s.InsertEvent(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := s.InsertEvent(ctx, e)
	if err != nil {
		t.Fatal(err)
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
	if err := s.SetLogged(ctx, catalog.Ref{Kind: "other", ID: 1}, 0, nil, []byte("cp")); err == nil {
		t.Error("unknown kind: want an error")
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	open(t, path).Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := sqlite.Open(t.Context(), path); err == nil {
		t.Error("opening a newer schema: want an error")
	}
}
