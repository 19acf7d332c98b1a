package sqlite

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// TestComponentPackageMigrationFillsStoredComponents: a catalog whose SBOM
// components were stored before it kept their packages finds them by
// package after the migration, every spelling and more than one fill batch
// of them; components of no advisory ecosystem keep empty packages.
func TestComponentPackageMigrationFillsStoredComponents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	before := len(migrations) - 1
	if migrations[before].ddl != componentPackageMigration.ddl {
		t.Fatal("the component package migration is not the last one: give this test the state before it")
	}
	for _, m := range migrations[:before] {
		if _, err := db.Exec(m.ddl); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(fmt.Sprintf(`PRAGMA user_version = %d;
		INSERT INTO artifacts (id, name, version, digest, size, channel, builder_id, source_repo, source_commit, created_at, envelope, leaf, search_from, log_index, proof, checkpoint)
			VALUES (1, 'app', '1.0.0', 'sha256:%064x', 3, 'stable', 'spiffe://t/builder/ci', '', '', '2025-01-02T03:04:05Z', x'', x'', 0, 0, x'', x'00');
		INSERT INTO sboms (id, artifact_id, format, document_digest, document, envelope, key_id, attached_by, attached_at, log_index)
			VALUES (1, 1, 'cyclonedx-json', 'sha256:x', x'', x'', '', 'spiffe://t/builder/ci', '2025-01-02T03:04:05Z', 1)`, before, 1)); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	stmt, err := tx.Prepare(`INSERT INTO sbom_components (sbom_id, seq, purl, name, version, license) VALUES (1, ?, ?, '', '', '')`)
	if err != nil {
		t.Fatal(err)
	}
	const n = fillBatch + 7
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
		if _, err := stmt.Exec(i, purl); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cs, err := s.ComponentsByPackage(t.Context(), catalog.AdvisoryPackage{Ecosystem: "PyPI", Name: "jinja2"}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Component.PURL != "pkg:pypi/Jinja2@2.11.2" || cs[1].Component.PURL != "pkg:pypi/jinja2@3.0.0" {
		t.Errorf("after the migration: %+v; want both spellings of jinja2", cs)
	}
	var filled, empty int
	if err := s.db.QueryRow(`SELECT count(*) FILTER (WHERE pkg_ecosystem != ''), count(*) FILTER (WHERE pkg_ecosystem = '') FROM sbom_components`).Scan(&filled, &empty); err != nil {
		t.Fatal(err)
	}
	if filled != n-1 || empty != 1 {
		t.Errorf("%d components with a package, %d without; want %d and 1 (the pkg:generic one)", filled, empty, n-1)
	}
}
