package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// componentPackageMigration keeps beside each SBOM component the package
// its purl names, as advisories name packages (catalog.ComponentPackage),
// so that the artifacts an advisory affects are found by package whatever
// the spelling of their purls ("pkg:pypi/Jinja2" and "pkg:pypi/jinja2").
// The purl index it replaces found only canonical spellings. Components of
// ecosystems advisories are not matched in keep empty columns and stay out
// of the index.
var componentPackageMigration = migration{ddl: `ALTER TABLE sbom_components ADD COLUMN pkg_ecosystem TEXT NOT NULL DEFAULT '';
	ALTER TABLE sbom_components ADD COLUMN pkg_name TEXT NOT NULL DEFAULT '';
	DROP INDEX sbom_components_by_purl;
	CREATE INDEX sbom_components_by_package ON sbom_components (pkg_ecosystem, pkg_name, sbom_id) WHERE pkg_ecosystem != '';`,
	fill: fillComponentPackages}

// fillBatch is how many components fillComponentPackages reads at a time.
const fillBatch = 10_000

// fillComponentPackages sets the package of the components stored before
// the catalog kept it, a batch at a time in key order.
func fillComponentPackages(ctx context.Context, tx *sql.Tx) error {
	update, err := tx.PrepareContext(ctx, `UPDATE sbom_components SET pkg_ecosystem = ?, pkg_name = ? WHERE sbom_id = ? AND seq = ?`)
	if err != nil {
		return err
	}
	defer update.Close()
	type row struct {
		sbom, seq int64
		pkg       catalog.AdvisoryPackage
	}
	var lastSBOM, lastSeq int64 = -1, -1
	for {
		rows, err := tx.QueryContext(ctx, `SELECT sbom_id, seq, purl FROM sbom_components WHERE (sbom_id, seq) > (?, ?) ORDER BY sbom_id, seq LIMIT ?`,
			lastSBOM, lastSeq, fillBatch)
		if err != nil {
			return err
		}
		var batch []row
		n := 0
		for rows.Next() {
			var (
				r    row
				purl string
			)
			if err := rows.Scan(&r.sbom, &r.seq, &purl); err != nil {
				rows.Close()
				return err
			}
			n++
			lastSBOM, lastSeq = r.sbom, r.seq
			if p, ok := catalog.ComponentPackage(purl); ok {
				r.pkg = p
				batch = append(batch, r)
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return err
		}
		for _, r := range batch {
			if _, err := update.ExecContext(ctx, r.pkg.Ecosystem, r.pkg.Name, r.sbom, r.seq); err != nil {
				return fmt.Errorf("component %d of SBOM %d: %w", r.seq, r.sbom, err)
			}
		}
		if n < fillBatch {
			return nil
		}
	}
}

// ComponentsByPackage returns up to limit components of logged artifacts
// whose purl names pkg: a range of sbom_components_by_package.
func (s *Store) ComponentsByPackage(ctx context.Context, pkg catalog.AdvisoryPackage, limit int) ([]catalog.ArtifactComponent, error) {
	if pkg.Ecosystem == "" || pkg.Name == "" {
		return nil, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT a.name, a.version, a.digest, c.purl, c.name, c.version, c.license
		FROM sbom_components c JOIN sboms b ON b.id = c.sbom_id JOIN artifacts a ON a.id = b.artifact_id
		WHERE c.pkg_ecosystem = ? AND c.pkg_name = ? AND c.pkg_ecosystem != '' AND a.checkpoint IS NOT NULL
		ORDER BY a.id, c.seq LIMIT ?`, pkg.Ecosystem, pkg.Name, limit)
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
