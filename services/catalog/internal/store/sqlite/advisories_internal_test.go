package sqlite

import (
	"database/sql"
	"path/filepath"
	"testing"
)

// TestAdvisoryRowidMigrationKeepsRows: the rebuild of advisories as a
// rowid table keeps every advisory and package row, and the packages
// still reference advisories.
func TestAdvisoryRowidMigrationKeepsRows(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "m.db")+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(advisoryMigration.ddl); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO advisories VALUES ('GHSA-1', 'sha256:a', x'7b7d', 'HIGH', 0, '2024-01-01T00:00:00Z', 'sha256:s');
		INSERT INTO advisory_packages VALUES ('npm', 'lodash', 'GHSA-1')`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(advisoryRowidMigration.ddl); err != nil {
		t.Fatal(err)
	}
	var id, name string
	if err := db.QueryRow(`SELECT a.id, p.name FROM advisories a JOIN advisory_packages p ON p.advisory_id = a.id`).Scan(&id, &name); err != nil || id != "GHSA-1" || name != "lodash" {
		t.Fatalf("after the rebuild: %q %q, %v", id, name, err)
	}
	if _, err := db.Exec(`INSERT INTO advisory_packages VALUES ('npm', 'x', 'NONE-1')`); err == nil {
		t.Error("a package of no advisory was stored: the foreign key was lost")
	}
	if _, err := db.Exec(`INSERT INTO advisories VALUES ('GHSA-1', 'sha256:b', x'', 'LOW', 0, '', '')`); err == nil {
		t.Error("an id stored twice: the unique id was lost")
	}
}
