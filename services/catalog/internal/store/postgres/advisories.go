package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// advisoryMigration is SQLite's advisoryMigration (decision 0081).
var advisoryMigration = migration{ddl: `CREATE TABLE advisories (
		id         TEXT        PRIMARY KEY,
		digest     TEXT        NOT NULL, -- sha256 of document
		document   BYTEA       NOT NULL, -- the OSV JSON as imported
		severity   TEXT        NOT NULL,
		withdrawn  BOOLEAN     NOT NULL,
		modified   TIMESTAMPTZ NOT NULL,
		set_digest TEXT        NOT NULL  -- of the import that stored document
	);
	CREATE TABLE advisory_packages (
		ecosystem   TEXT NOT NULL,
		name        TEXT NOT NULL,
		advisory_id TEXT NOT NULL REFERENCES advisories (id),
		PRIMARY KEY (ecosystem, name, advisory_id)
	);
	CREATE INDEX advisory_packages_by_advisory ON advisory_packages (advisory_id);
	CREATE TABLE advisory_imports (
		id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		set_digest TEXT        NOT NULL UNIQUE,
		count      INTEGER     NOT NULL,
		added      INTEGER     NOT NULL,
		updated    INTEGER     NOT NULL,
		unchanged  INTEGER     NOT NULL,
		actor      TEXT        NOT NULL,
		created_at TIMESTAMPTZ NOT NULL,
		log_index  BIGINT      NOT NULL,
		leaf       BYTEA       NOT NULL
	);`}

// AdvisoryImport returns the import of setDigest, or ErrNotFound.
func (s *Store) AdvisoryImport(ctx context.Context, setDigest string) (*catalog.AdvisoryImport, error) {
	var (
		imp     catalog.AdvisoryImport
		created time.Time
		index   int64
	)
	err := s.db.QueryRow(ctx, `SELECT id, set_digest, count, added, updated, unchanged, actor, created_at, log_index, leaf
		FROM advisory_imports WHERE set_digest = $1`, setDigest).Scan(&imp.ID, &imp.SetDigest, &imp.Count, &imp.Added, &imp.Updated,
		&imp.Unchanged, &imp.Actor, &created, &index, &imp.Leaf)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("advisory import %s: %w", setDigest, catalog.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read advisory import %s: %w", setDigest, err)
	}
	imp.CreatedAt, imp.LogIndex = created.UTC(), uint64(index)
	return &imp, nil
}

// AdvisoryDigests returns the stored digests of those of ids stored.
func (s *Store) AdvisoryDigests(ctx context.Context, ids []string) (map[string]string, error) {
	out := make(map[string]string)
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := s.db.Query(ctx, `SELECT id, digest FROM advisories WHERE id = ANY($1::text[])`, ids)
	if err != nil {
		return nil, fmt.Errorf("read advisory digests: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, d string
		if err := rows.Scan(&id, &d); err != nil {
			return nil, fmt.Errorf("read advisory digests: %w", err)
		}
		out[id] = d
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read advisory digests: %w", err)
	}
	return out, nil
}

// importBatch is how many advisories one pipelined batch writes.
const importBatch = 1000

// ImportAdvisories stores imp and advs in one transaction.
func (s *Store) ImportAdvisories(ctx context.Context, imp *catalog.AdvisoryImport, advs []catalog.StoredAdvisory) (int64, error) {
	var id int64
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO advisory_imports (set_digest, count, added, updated, unchanged, actor, created_at, log_index, leaf)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`, imp.SetDigest, imp.Count, imp.Added, imp.Updated, imp.Unchanged,
			imp.Actor, imp.CreatedAt.UTC(), int64(imp.LogIndex), imp.Leaf).Scan(&id); err != nil {
			return err
		}
		// Statements are pipelined in batches (one round trip per batch,
		// not per row): first the upserts, then the packages of the rows
		// that changed.
		for start := 0; start < len(advs); start += importBatch {
			chunk := advs[start:min(start+importBatch, len(advs))]
			b := &pgx.Batch{}
			for _, a := range chunk {
				// Insert, or replace a stored document with another
				// digest; a row with the same digest is left alone (no
				// row returned).
				b.Queue(`INSERT INTO advisories (id, digest, document, severity, withdrawn, modified, set_digest)
					VALUES ($1, $2, $3, $4, $5, $6, $7)
					ON CONFLICT (id) DO UPDATE SET digest = EXCLUDED.digest, document = EXCLUDED.document, severity = EXCLUDED.severity,
						withdrawn = EXCLUDED.withdrawn, modified = EXCLUDED.modified, set_digest = EXCLUDED.set_digest
					WHERE advisories.digest <> EXCLUDED.digest
					RETURNING true`, a.ID, a.Digest, a.Document, a.Severity, a.Withdrawn, a.Modified.UTC(), a.SetDigest)
			}
			changed := make([]bool, len(chunk))
			br := tx.SendBatch(ctx, b)
			for i := range chunk {
				var ok bool
				err := br.QueryRow().Scan(&ok)
				switch {
				case errors.Is(err, pgx.ErrNoRows):
				case err != nil:
					br.Close()
					return err
				default:
					changed[i] = true
				}
			}
			if err := br.Close(); err != nil {
				return err
			}
			pb := &pgx.Batch{}
			for i, a := range chunk {
				if !changed[i] {
					continue
				}
				pb.Queue(`DELETE FROM advisory_packages WHERE advisory_id = $1`, a.ID)
				for _, p := range a.Packages {
					pb.Queue(`INSERT INTO advisory_packages (ecosystem, name, advisory_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
						p.Ecosystem, p.Name, a.ID)
				}
			}
			if pb.Len() > 0 {
				if err := tx.SendBatch(ctx, pb).Close(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		if isCode(err, uniqueViolation) {
			return 0, fmt.Errorf("import advisories %s: %w", imp.SetDigest, catalog.ErrAlreadyExists)
		}
		return 0, fmt.Errorf("import advisories %s: %w", imp.SetDigest, err)
	}
	return id, nil
}

// Advisory returns the stored advisory id, or ErrNotFound.
func (s *Store) Advisory(ctx context.Context, id string) (*catalog.StoredAdvisory, error) {
	var a catalog.StoredAdvisory
	err := s.db.QueryRow(ctx, `SELECT id, digest, document, severity, withdrawn, modified, set_digest FROM advisories WHERE id = $1`, id).
		Scan(&a.ID, &a.Digest, &a.Document, &a.Severity, &a.Withdrawn, &a.Modified, &a.SetDigest)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("advisory %s: %w", id, catalog.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read advisory %s: %w", id, err)
	}
	a.Modified = a.Modified.UTC()
	rows, err := s.db.Query(ctx, `SELECT ecosystem, name FROM advisory_packages WHERE advisory_id = $1 ORDER BY ecosystem, name`, id)
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
	if len(pkgs) == 0 {
		return nil, nil
	}
	ecos, names := make([]string, len(pkgs)), make([]string, len(pkgs))
	for i, p := range pkgs {
		ecos[i], names[i] = p.Ecosystem, p.Name
	}
	rows, err := s.db.Query(ctx, `SELECT a.id, a.digest, a.document, a.severity, a.withdrawn, a.modified, a.set_digest
		FROM advisories a WHERE a.id IN (
			SELECT p.advisory_id FROM advisory_packages p JOIN unnest($1::text[], $2::text[]) AS k(ecosystem, name)
			ON p.ecosystem = k.ecosystem AND p.name = k.name)
		ORDER BY a.id LIMIT $3`, ecos, names, limit)
	if err != nil {
		return nil, fmt.Errorf("read advisories by package: %w", err)
	}
	defer rows.Close()
	var out []catalog.StoredAdvisory
	for rows.Next() {
		var a catalog.StoredAdvisory
		if err := rows.Scan(&a.ID, &a.Digest, &a.Document, &a.Severity, &a.Withdrawn, &a.Modified, &a.SetDigest); err != nil {
			return nil, fmt.Errorf("read advisories by package: %w", err)
		}
		a.Modified = a.Modified.UTC()
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read advisories by package: %w", err)
	}
	return out, nil
}
