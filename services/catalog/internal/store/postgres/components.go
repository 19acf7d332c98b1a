package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// componentPackageMigration keeps beside each SBOM component the package
// its purl names (catalog.ComponentPackage), as SQLite's does: the
// artifacts an advisory affects are found by package whatever the spelling
// of their purls. It replaces the purl index, which found only canonical
// spellings.
var componentPackageMigration = migration{ddl: `ALTER TABLE sbom_components ADD COLUMN pkg_ecosystem TEXT NOT NULL DEFAULT '';
	ALTER TABLE sbom_components ADD COLUMN pkg_name TEXT NOT NULL DEFAULT '';
	DROP INDEX sbom_components_by_purl;
	CREATE INDEX sbom_components_by_package ON sbom_components (pkg_ecosystem, pkg_name, sbom_id) WHERE pkg_ecosystem <> '';`,
	fill: fillComponentPackages}

// fillBatch is how many components fillComponentPackages reads at a time.
const fillBatch = 10_000

// fillComponentPackages sets the package of the components stored before
// the catalog kept it, a batch at a time in key order.
func fillComponentPackages(ctx context.Context, tx pgx.Tx) error {
	var lastSBOM, lastSeq int64 = -1, -1
	for {
		rows, err := tx.Query(ctx, `SELECT sbom_id, seq, purl FROM sbom_components WHERE (sbom_id, seq) > ($1, $2) ORDER BY sbom_id, seq LIMIT $3`,
			lastSBOM, lastSeq, fillBatch)
		if err != nil {
			return err
		}
		var (
			batch pgx.Batch
			n     int
		)
		for rows.Next() {
			var (
				id   int64
				seq  int32
				purl string
			)
			if err := rows.Scan(&id, &seq, &purl); err != nil {
				rows.Close()
				return err
			}
			n++
			lastSBOM, lastSeq = id, int64(seq)
			if p, ok := catalog.ComponentPackage(purl); ok {
				batch.Queue(`UPDATE sbom_components SET pkg_ecosystem = $1, pkg_name = $2 WHERE sbom_id = $3 AND seq = $4`, p.Ecosystem, p.Name, id, seq)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if batch.Len() > 0 {
			if err := tx.SendBatch(ctx, &batch).Close(); err != nil {
				return fmt.Errorf("fill component packages: %w", err)
			}
		}
		if n < fillBatch {
			return nil
		}
	}
}

// ComponentsByPackage returns up to limit components of logged artifacts
// whose purl names pkg.
func (s *Store) ComponentsByPackage(ctx context.Context, pkg catalog.AdvisoryPackage, limit int) ([]catalog.ArtifactComponent, error) {
	if pkg.Ecosystem == "" || pkg.Name == "" {
		return nil, nil
	}
	rows, err := s.db.Query(ctx, `SELECT a.name, a.version, a.digest, c.purl, c.name, c.version, c.license
		FROM sbom_components c JOIN sboms b ON b.id = c.sbom_id JOIN artifacts a ON a.id = b.artifact_id
		WHERE c.pkg_ecosystem = $1 AND c.pkg_name = $2 AND c.pkg_ecosystem <> '' AND a.checkpoint IS NOT NULL
		ORDER BY a.id, c.seq LIMIT $3`, pkg.Ecosystem, pkg.Name, limit)
	if err != nil {
		return nil, fmt.Errorf("read components by package: %w", err)
	}
	defer rows.Close()
	var out []catalog.ArtifactComponent
	for rows.Next() {
		var c catalog.ArtifactComponent
		if err := rows.Scan(&c.Artifact.Name, &c.Artifact.Version, &c.Artifact.Digest, &c.Component.PURL, &c.Component.Name,
			&c.Component.Version, &c.Component.License); err != nil {
			return nil, fmt.Errorf("read components by package: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read components by package: %w", err)
	}
	return out, nil
}
