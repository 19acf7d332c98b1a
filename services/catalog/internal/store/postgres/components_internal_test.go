package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/postgres/pgtest"
)

// TestComponentPackageMigrationFillsStoredComponents: SBOM components
// stored before the catalog kept their packages are found by package after
// the migration, every spelling and more than one fill batch of them;
// components of no advisory ecosystem keep empty packages.
func TestComponentPackageMigrationFillsStoredComponents(t *testing.T) {
	dsn := pgtest.Database(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	before := len(migrations) - 1
	if migrations[before].ddl != componentPackageMigration.ddl {
		t.Fatal("the component package migration is not the last one: give this test the state before it")
	}
	for _, m := range migrations[:before] {
		if _, err := conn.Exec(ctx, m.ddl); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
		INSERT INTO schema_migrations (version) SELECT generate_series(1, %d)`, before)); err != nil {
		t.Fatal(err)
	}
	var artifact, sbomID int64
	if err := conn.QueryRow(ctx, `INSERT INTO artifacts (name, version, digest, size, channel, builder_id, source_repo, source_commit, created_at,
		envelope, key_id, current_key_id, leaf, search_from, log_index, proof, checkpoint)
		VALUES ('app', '1.0.0', $1, 3, 'stable', 'spiffe://t/builder/ci', '', '', $2, ''::bytea, '', '', ''::bytea, 0, 0, ''::bytea, 'cp'::bytea) RETURNING id`,
		"sha256:"+strings.Repeat("0b", 32), time.Now().UTC()).Scan(&artifact); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `INSERT INTO sboms (artifact_id, format, document_digest, document, envelope, key_id, attached_by, attached_at, log_index)
		VALUES ($1, 'cyclonedx-json', 'sha256:x', ''::bytea, ''::bytea, '', 'spiffe://t/builder/ci', $2, 1) RETURNING id`, artifact, time.Now().UTC()).Scan(&sbomID); err != nil {
		t.Fatal(err)
	}
	const n = fillBatch + 7
	rows := make([][]any, n)
	for i := range n {
		purl := fmt.Sprintf("pkg:npm/filler-%d@1.0.0", i)
		switch i {
		case 3:
			purl = "pkg:pypi/Jinja2@2.11.2"
		case fillBatch + 2: // in the second batch
			purl = "pkg:pypi/jinja2@3.0.0"
		case 5:
			purl = "pkg:generic/jinja2@1.0.0"
		}
		rows[i] = []any{sbomID, int32(i), purl, "", "", ""}
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"sbom_components"}, []string{"sbom_id", "seq", "purl", "name", "version", "license"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}

	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cs, err := s.ComponentsByPackage(ctx, catalog.AdvisoryPackage{Ecosystem: "PyPI", Name: "jinja2"}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Component.PURL != "pkg:pypi/Jinja2@2.11.2" || cs[1].Component.PURL != "pkg:pypi/jinja2@3.0.0" {
		t.Errorf("after the migration: %+v; want both spellings of jinja2", cs)
	}
	var filled, empty int
	if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pkg_ecosystem <> ''), count(*) FILTER (WHERE pkg_ecosystem = '') FROM sbom_components`).Scan(&filled, &empty); err != nil {
		t.Fatal(err)
	}
	if filled != n-1 || empty != 1 {
		t.Errorf("%d components with a package, %d without; want %d and 1 (the pkg:generic one)", filled, empty, n-1)
	}
}
