package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// advisoryMigration adds OSV advisories, the packages they name (to find
// the advisories of a component) and their imports (decision 0081).
var advisoryMigration = migration{ddl: `CREATE TABLE advisories (
		id         TEXT    PRIMARY KEY,
		digest     TEXT    NOT NULL, -- sha256 of document
		document   BLOB    NOT NULL, -- the OSV JSON as imported
		severity   TEXT    NOT NULL,
		withdrawn  INTEGER NOT NULL,
		modified   TEXT    NOT NULL, -- RFC 3339, UTC
		set_digest TEXT    NOT NULL  -- of the import that stored document
	) WITHOUT ROWID;
	CREATE TABLE advisory_packages (
		ecosystem   TEXT NOT NULL,
		name        TEXT NOT NULL,
		advisory_id TEXT NOT NULL REFERENCES advisories (id),
		PRIMARY KEY (ecosystem, name, advisory_id)
	) WITHOUT ROWID;
	CREATE INDEX advisory_packages_by_advisory ON advisory_packages (advisory_id);
	CREATE TABLE advisory_imports (
		id         INTEGER PRIMARY KEY,
		set_digest TEXT    NOT NULL UNIQUE,
		count      INTEGER NOT NULL,
		added      INTEGER NOT NULL,
		updated    INTEGER NOT NULL,
		unchanged  INTEGER NOT NULL,
		actor      TEXT    NOT NULL,
		created_at TEXT    NOT NULL,
		log_index  INTEGER NOT NULL,
		leaf       BLOB    NOT NULL
	);`}

// advisoryRowidMigration rebuilds advisories as a rowid table: in a
// WITHOUT ROWID table the whole row, its document included, is the b-tree
// key, and every lookup by id unpacked kilobytes of overflow pages (an
// import of 20,000 advisories took 13 s, most of it in malloc).
var advisoryRowidMigration = migration{ddl: `CREATE TABLE advisories_rowid (
		id         TEXT    NOT NULL UNIQUE,
		digest     TEXT    NOT NULL,
		document   BLOB    NOT NULL,
		severity   TEXT    NOT NULL,
		withdrawn  INTEGER NOT NULL,
		modified   TEXT    NOT NULL,
		set_digest TEXT    NOT NULL
	);
	INSERT INTO advisories_rowid (id, digest, document, severity, withdrawn, modified, set_digest)
		SELECT id, digest, document, severity, withdrawn, modified, set_digest FROM advisories;
	CREATE TABLE advisory_packages_rowid (
		ecosystem   TEXT NOT NULL,
		name        TEXT NOT NULL,
		advisory_id TEXT NOT NULL REFERENCES advisories_rowid (id),
		PRIMARY KEY (ecosystem, name, advisory_id)
	) WITHOUT ROWID;
	INSERT INTO advisory_packages_rowid SELECT ecosystem, name, advisory_id FROM advisory_packages;
	DROP TABLE advisory_packages;
	DROP TABLE advisories;
	ALTER TABLE advisories_rowid RENAME TO advisories;
	ALTER TABLE advisory_packages_rowid RENAME TO advisory_packages;
	CREATE INDEX advisory_packages_by_advisory ON advisory_packages (advisory_id);`}

// AdvisoryImport returns the import of setDigest, or ErrNotFound.
func (s *Store) AdvisoryImport(ctx context.Context, setDigest string) (*catalog.AdvisoryImport, error) {
	var (
		imp     catalog.AdvisoryImport
		created string
	)
	err := s.db.QueryRowContext(ctx, `SELECT id, set_digest, count, added, updated, unchanged, actor, created_at, log_index, leaf
		FROM advisory_imports WHERE set_digest = ?`, setDigest).Scan(&imp.ID, &imp.SetDigest, &imp.Count, &imp.Added, &imp.Updated,
		&imp.Unchanged, &imp.Actor, &created, &imp.LogIndex, &imp.Leaf)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("advisory import %s: %w", setDigest, catalog.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read advisory import %s: %w", setDigest, err)
	}
	if imp.CreatedAt, err = parseTime(created); err != nil {
		return nil, err
	}
	return &imp, nil
}

// maxParams bounds the parameters of one statement (SQLite's default limit
// is 32766).
const maxParams = 500

// AdvisoryDigests returns the stored digests of those of ids stored.
func (s *Store) AdvisoryDigests(ctx context.Context, ids []string) (map[string]string, error) {
	out := make(map[string]string)
	for start := 0; start < len(ids); start += maxParams {
		chunk := ids[start:min(start+maxParams, len(ids))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rows, err := s.db.QueryContext(ctx, `SELECT id, digest FROM advisories WHERE id IN (?`+strings.Repeat(",?", len(chunk)-1)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("read advisory digests: %w", err)
		}
		for rows.Next() {
			var id, d string
			if err := rows.Scan(&id, &d); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read advisory digests: %w", err)
			}
			out[id] = d
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read advisory digests: %w", err)
		}
	}
	return out, nil
}

// ImportAdvisories stores imp and advs in one transaction.
func (s *Store) ImportAdvisories(ctx context.Context, imp *catalog.AdvisoryImport, advs []catalog.StoredAdvisory) (int64, error) {
	var id int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`INSERT INTO advisory_imports (set_digest, count, added, updated, unchanged, actor, created_at, log_index, leaf)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, imp.SetDigest, imp.Count, imp.Added, imp.Updated, imp.Unchanged, imp.Actor,
			formatTime(imp.CreatedAt), imp.LogIndex, imp.Leaf)
		if err != nil {
			return err
		}
		if id, err = res.LastInsertId(); err != nil {
			return err
		}
		// Prepared once for the whole set: parsing each statement per row
		// costs more than running it.
		stmts := map[string]*sql.Stmt{}
		for name, q := range map[string]string{
			"digest":  `SELECT digest FROM advisories WHERE id = ?`,
			"unpack":  `DELETE FROM advisory_packages WHERE advisory_id = ?`,
			"update":  `UPDATE advisories SET digest = ?, document = ?, severity = ?, withdrawn = ?, modified = ?, set_digest = ? WHERE id = ?`,
			"insert":  `INSERT INTO advisories (id, digest, document, severity, withdrawn, modified, set_digest) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			"package": `INSERT OR IGNORE INTO advisory_packages (ecosystem, name, advisory_id) VALUES (?, ?, ?)`,
		} {
			st, err := tx.Prepare(q)
			if err != nil {
				return err
			}
			defer st.Close()
			stmts[name] = st
		}
		for _, a := range advs {
			var prev string
			switch err := stmts["digest"].QueryRow(a.ID).Scan(&prev); {
			case err == nil && prev == a.Digest:
				continue
			case err == nil:
				if _, err := stmts["unpack"].Exec(a.ID); err != nil {
					return err
				}
				if _, err := stmts["update"].Exec(a.Digest, a.Document, a.Severity, a.Withdrawn, formatTime(a.Modified), a.SetDigest, a.ID); err != nil {
					return err
				}
			case errors.Is(err, sql.ErrNoRows):
				if _, err := stmts["insert"].Exec(a.ID, a.Digest, a.Document, a.Severity, a.Withdrawn, formatTime(a.Modified), a.SetDigest); err != nil {
					return err
				}
			default:
				return err
			}
			for _, p := range a.Packages {
				if _, err := stmts["package"].Exec(p.Ecosystem, p.Name, a.ID); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		if isUnique(err) {
			return 0, fmt.Errorf("import advisories %s: %w", imp.SetDigest, catalog.ErrAlreadyExists)
		}
		return 0, fmt.Errorf("import advisories %s: %w", imp.SetDigest, err)
	}
	return id, nil
}

// Advisory returns the stored advisory id, or ErrNotFound.
func (s *Store) Advisory(ctx context.Context, id string) (*catalog.StoredAdvisory, error) {
	var (
		a        catalog.StoredAdvisory
		modified string
	)
	err := s.db.QueryRowContext(ctx, `SELECT id, digest, document, severity, withdrawn, modified, set_digest FROM advisories WHERE id = ?`, id).
		Scan(&a.ID, &a.Digest, &a.Document, &a.Severity, &a.Withdrawn, &modified, &a.SetDigest)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("advisory %s: %w", id, catalog.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read advisory %s: %w", id, err)
	}
	if a.Modified, err = parseTime(modified); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT ecosystem, name FROM advisory_packages WHERE advisory_id = ? ORDER BY ecosystem, name`, id)
	if err != nil {
		return nil, fmt.Errorf("read advisory %s packages: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var p catalog.AdvisoryPackage
		if err := rows.Scan(&p.Ecosystem, &p.Name); err != nil {
			return nil, fmt.Errorf("read advisory %s packages: %w", id, err)
		}
		a.Packages = append(a.Packages, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read advisory %s packages: %w", id, err)
	}
	return &a, nil
}

// AdvisoriesByPackages returns up to limit advisories naming any of pkgs.
func (s *Store) AdvisoriesByPackages(ctx context.Context, pkgs []catalog.AdvisoryPackage, limit int) ([]catalog.StoredAdvisory, error) {
	seen := map[string]bool{}
	var out []catalog.StoredAdvisory
	for start := 0; start < len(pkgs) && len(out) < limit; start += maxParams / 2 {
		chunk := pkgs[start:min(start+maxParams/2, len(pkgs))]
		var (
			conds []string
			args  []any
		)
		for _, p := range chunk {
			conds = append(conds, "(p.ecosystem = ? AND p.name = ?)")
			args = append(args, p.Ecosystem, p.Name)
		}
		args = append(args, limit)
		rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT a.id, a.digest, a.document, a.severity, a.withdrawn, a.modified, a.set_digest
			FROM advisory_packages p JOIN advisories a ON a.id = p.advisory_id WHERE `+strings.Join(conds, " OR ")+` ORDER BY a.id LIMIT ?`, args...)
		if err != nil {
			return nil, fmt.Errorf("read advisories by package: %w", err)
		}
		for rows.Next() {
			var (
				a        catalog.StoredAdvisory
				modified string
			)
			if err := rows.Scan(&a.ID, &a.Digest, &a.Document, &a.Severity, &a.Withdrawn, &modified, &a.SetDigest); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read advisories by package: %w", err)
			}
			if a.Modified, err = parseTime(modified); err != nil {
				rows.Close()
				return nil, err
			}
			if !seen[a.ID] && len(out) < limit {
				seen[a.ID] = true
				out = append(out, a)
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read advisories by package: %w", err)
		}
	}
	slices.SortFunc(out, func(a, b catalog.StoredAdvisory) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
