package sqlite_test

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlite"
)

var (
	keyA = strings.Repeat("a", 64)
	keyB = strings.Repeat("b", 64)
	keyC = strings.Repeat("c", 64)
)

// logged inserts r and marks it logged at index, returning its ID.
func logged(t *testing.T, s *sqlite.Store, r *catalog.ArtifactRecord, index uint64) int64 {
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
		Actor: "spiffe://t/admin/ops", CreatedAt: time.Date(2025, 2, 3, 4, 5, 6, 7, time.UTC),
		Entry: catalog.Entry{Leaf: []byte(leaf), SearchFrom: 3}}
}

func TestSignatures(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	s := open(t, path)
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
	if l := list(t, s, keyB, 0, 10); len(l) != 1 || l[0].ID != id || l[0].KeyID != keyB {
		t.Errorf("listed by the new key: %+v", l)
	}
	if l := list(t, s, keyA, 0, 10); len(l) != 0 {
		t.Errorf("still listed by the replaced key: %+v", l)
	}

	second := signature(id, keyC, "resign-2")
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

	s = open(t, path)
	recs, err := s.LoggedArtifactsByDigest(ctx, d1)
	if err != nil || len(recs) != 1 || recs[0].Resigned == nil || recs[0].Resigned.ID != second.ID {
		t.Fatalf("LoggedArtifactsByDigest = %+v, %v; want the second signature current", recs, err)
	}
	if _, key, e := recs[0].Current(); key != keyC || e.Index != 6 {
		t.Errorf("Current = key %q, index %d; want %q, 6", key, e.Index, keyC)
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

func list(t *testing.T, s *sqlite.Store, keyID string, after int64, limit int) []catalog.Listed {
	t.Helper()
	l, err := s.ListArtifacts(t.Context(), keyID, after, limit)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestListArtifacts(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "catalog.db"))
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

// schemaV1 is the schema before re-signatures, as the first catalogs
// created it.
const schemaV1 = `CREATE TABLE artifacts (
		id            INTEGER PRIMARY KEY,
		name          TEXT    NOT NULL,
		version       TEXT    NOT NULL,
		digest        TEXT    NOT NULL,
		size          INTEGER NOT NULL,
		channel       TEXT    NOT NULL,
		builder_id    TEXT    NOT NULL,
		source_repo   TEXT    NOT NULL,
		source_commit TEXT    NOT NULL,
		created_at    TEXT    NOT NULL,
		envelope      BLOB    NOT NULL,
		leaf          BLOB    NOT NULL,
		search_from   INTEGER NOT NULL,
		log_index     INTEGER,
		proof         BLOB,
		checkpoint    BLOB,
		UNIQUE (name, version),
		UNIQUE (log_index)
	);
	CREATE INDEX artifacts_by_digest ON artifacts (digest);
	CREATE INDEX artifacts_pending ON artifacts (id) WHERE checkpoint IS NULL;
	CREATE TABLE events (
		id             INTEGER PRIMARY KEY,
		type           TEXT    NOT NULL,
		actor          TEXT    NOT NULL,
		subject_digest TEXT    NOT NULL,
		details        BLOB,
		created_at     TEXT    NOT NULL,
		leaf           BLOB    NOT NULL,
		search_from    INTEGER NOT NULL,
		log_index      INTEGER,
		proof          BLOB,
		checkpoint     BLOB,
		UNIQUE (log_index)
	);
	CREATE INDEX events_by_subject ON events (subject_digest);
	CREATE INDEX events_pending ON events (id) WHERE checkpoint IS NULL;
	PRAGMA user_version = 1;`

func TestMigrateFromV1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schemaV1); err != nil {
		t.Fatal(err)
	}
	env, err := attest.SignEnvelope(attest.PayloadType, []byte(`{}`), keyA, func([]byte) ([]byte, error) { return []byte("sig"), nil })
	if err != nil {
		t.Fatal(err)
	}
	insert := `INSERT INTO artifacts (name, version, digest, size, channel, builder_id, source_repo, source_commit, created_at,
		envelope, leaf, search_from, log_index, proof, checkpoint) VALUES ('app', ?, ?, 3, 'stable', 'spiffe://t/builder/ci', '', '',
		'2025-01-02T03:04:05Z', ?, ?, 0, ?, x'', 'cp')`
	for i, e := range [][]byte{env, []byte("not an envelope"), env} {
		if _, err := db.Exec(insert, fmt.Sprintf("1.0.%d", i), d1, e, fmt.Sprintf("leaf-%d", i), i); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s := open(t, path)
	ctx := t.Context()
	for _, tt := range []struct{ version, key string }{{"1.0.0", keyA}, {"1.0.1", ""}, {"1.0.2", keyA}} {
		r, err := s.Artifact(ctx, "app", tt.version)
		if err != nil {
			t.Fatal(err)
		}
		if r.KeyID != tt.key || r.Resigned != nil || !r.Entry.Logged() {
			t.Errorf("migrated %s: key id %q, resigned %v, logged %v; want %q, nil, true", tt.version, r.KeyID, r.Resigned, r.Entry.Logged(), tt.key)
		}
	}
	if l := list(t, s, keyA, 0, 10); len(l) != 2 || l[0].Artifact.Version != "1.0.0" || l[1].Artifact.Version != "1.0.2" {
		t.Errorf("listed by key after migration: %+v", l)
	}
	// The migrated database takes re-signatures.
	sid, err := s.InsertSignature(ctx, signature(1, keyB, "resign"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetLogged(ctx, catalog.Ref{Kind: catalog.KindSignature, ID: sid}, 3, nil, []byte("cp")); err != nil {
		t.Fatal(err)
	}
	if l := list(t, s, keyB, 0, 10); len(l) != 1 || l[0].Artifact.Version != "1.0.0" {
		t.Errorf("listed by the new key: %+v", l)
	}
	s.Close()
	db, err = sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var version int
	if err := db.QueryRow("PRAGMA user_version").Scan(&version); err != nil || version != 2 {
		t.Errorf("user_version = %d, %v; want 2", version, err)
	}
	db.Close()
	// Reopening does not migrate again.
	s = open(t, path)
	if l := list(t, s, keyB, 0, 10); len(l) != 1 {
		t.Errorf("after reopening, listed by the new key: %+v", l)
	}
}
