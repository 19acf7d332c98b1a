package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/postgres/pgtest"
)

// TestMigrateFromV1 opens a database at schema version 1 holding logged
// artifacts recorded before the lineage graph, one with an envelope whose
// provenance claims a dependency and one whose envelope does not parse, and
// checks that the migration fills the edges from the envelopes.
func TestMigrateFromV1(t *testing.T) {
	dsn := pgtest.Database(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, migrations[0].ddl); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
		INSERT INTO schema_migrations (version) VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	base := "sha256:" + strings.Repeat("0a", 32)
	app := catalog.Artifact{Name: "app", Version: "1", Digest: "sha256:" + strings.Repeat("0b", 32), Channel: "stable", BuilderID: "spiffe://t/builder/ci"}
	statement, err := attest.NewProvenance(attest.Artifact{Name: app.Name, Version: app.Version, Digest: app.Digest, Channel: app.Channel, BuilderID: app.BuilderID,
		Dependencies: []attest.ResourceDescriptor{{URI: "custody:" + base, Digest: map[string]string{"sha256": strings.TrimPrefix(base, "sha256:")},
			Annotations: map[string]string{attest.AnnotationKind: attest.KindArtifact}}}})
	if err != nil {
		t.Fatal(err)
	}
	env, err := attest.SignEnvelope(attest.PayloadType, statement, "k", func([]byte) ([]byte, error) { return []byte("sig"), nil })
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range [][]byte{env, []byte("not an envelope")} {
		if _, err := conn.Exec(ctx, `INSERT INTO artifacts (name, version, digest, size, channel, builder_id, source_repo, source_commit, created_at,
			envelope, key_id, current_key_id, leaf, search_from, log_index, proof, checkpoint)
			VALUES ('app', $1, $2, 3, 'stable', 'spiffe://t/builder/ci', '', '', $3, $4, 'k', 'k', $5, 0, $6, ''::bytea, 'cp'::bytea)`,
			[]string{"1", "2"}[i], app.Digest, time.Now().UTC(), e, []byte{byte(i)}, int64(i)); err != nil {
			t.Fatal(err)
		}
	}

	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	edges, err := s.Lineage(ctx, app.Digest, catalog.Up, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(edges) != 1 || edges[0].Artifact.Version != "1" || edges[0].Dependency.Key != base ||
		edges[0].Dependency.Digest["sha256"] != strings.TrimPrefix(base, "sha256:") {
		t.Errorf("edges filled from the envelopes: %+v; want app@1 → %s", edges, base)
	}
}
