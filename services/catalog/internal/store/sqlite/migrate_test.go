package sqlite_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlite"
	"github.com/custody-dev/custody/services/catalog/internal/store/storetest"
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

// TestConformance runs the metadata store suite; "two stores" are two
// Stores (two connection pools) over one database file.
func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Options{NewDatabase: func(t *testing.T) storetest.Opener {
		path := filepath.Join(t.TempDir(), "catalog.db")
		return func(t *testing.T) storetest.Store { return open(t, path) }
	}})
}

var (
	d1   = "sha256:" + strings.Repeat("a", 64)
	keyA = strings.Repeat("a", 64)
	keyB = strings.Repeat("b", 64)
)

func list(t *testing.T, s *sqlite.Store, keyID string, after int64, limit int) []catalog.Listed {
	t.Helper()
	l, err := s.ListArtifacts(t.Context(), keyID, after, limit)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func signature(artifactID int64, keyID, leaf string) *catalog.Signature {
	return &catalog.Signature{ArtifactID: artifactID, Envelope: []byte(`{"sig":"` + leaf + `"}`), KeyID: keyID,
		Actor: "spiffe://t/admin/ops", CreatedAt: time.Date(2025, 2, 3, 4, 5, 6, 7, time.UTC),
		Entry: catalog.Entry{Leaf: []byte(leaf), SearchFrom: 3}}
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
	if _, err := sqlite.Open(t.Context(), path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("opening a newer schema: got %v, want an error saying it is newer", err)
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
	if err := db.QueryRow("PRAGMA user_version").Scan(&version); err != nil || version != 9 {
		t.Errorf("user_version = %d, %v; want 9", version, err)
	}
	db.Close()
	// Reopening does not migrate again.
	s = open(t, path)
	if l := list(t, s, keyB, 0, 10); len(l) != 1 {
		t.Errorf("after reopening, listed by the new key: %+v", l)
	}
}
