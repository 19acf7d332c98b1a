package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// sbomMigration adds SBOMs: one per artifact (the unique artifact_id), its
// document and signed statement, and its components in document order,
// indexed by purl for advisory matching.
var sbomMigration = migration{ddl: `CREATE TABLE sboms (
		id              INTEGER PRIMARY KEY,
		artifact_id     INTEGER NOT NULL UNIQUE REFERENCES artifacts (id),
		format          TEXT    NOT NULL, -- cyclonedx-json or spdx-json
		document_digest TEXT    NOT NULL, -- sha256:<hex> of document
		document        BLOB    NOT NULL,
		envelope        BLOB    NOT NULL, -- DSSE over the SBOM statement
		key_id          TEXT    NOT NULL,
		attached_by     TEXT    NOT NULL,
		attached_at     TEXT    NOT NULL,
		log_index       INTEGER NOT NULL  -- of the sbom.attached entry
	);
	CREATE TABLE sbom_components (
		sbom_id INTEGER NOT NULL REFERENCES sboms (id),
		seq     INTEGER NOT NULL, -- document order
		purl    TEXT    NOT NULL,
		name    TEXT    NOT NULL,
		version TEXT    NOT NULL,
		license TEXT    NOT NULL,
		PRIMARY KEY (sbom_id, seq)
	);
	CREATE INDEX sbom_components_by_purl ON sbom_components (purl, sbom_id);`}

// InsertSBOM stores s and its components.
func (s *Store) InsertSBOM(ctx context.Context, b *catalog.SBOM) (int64, error) {
	var id int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`INSERT INTO sboms (artifact_id, format, document_digest, document, envelope, key_id, attached_by, attached_at, log_index)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			b.ArtifactID, b.Format, b.DocumentDigest, b.Document, b.Envelope, b.KeyID, b.AttachedBy, formatTime(b.AttachedAt), int64(b.LogIndex))
		if err != nil {
			return err
		}
		if id, err = res.LastInsertId(); err != nil {
			return err
		}
		stmt, err := tx.Prepare(`INSERT INTO sbom_components (sbom_id, seq, purl, name, version, license, pkg_ecosystem, pkg_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, c := range b.Components {
			p, _ := catalog.ComponentPackage(c.PURL)
			if _, err := stmt.Exec(id, i, c.PURL, c.Name, c.Version, c.License, p.Ecosystem, p.Name); err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case err == nil:
		return id, nil
	case isUnique(err):
		return 0, fmt.Errorf("insert SBOM of artifact %d: %w", b.ArtifactID, catalog.ErrAlreadyExists)
	case isForeignKey(err):
		return 0, fmt.Errorf("insert SBOM of artifact %d: %w", b.ArtifactID, catalog.ErrNotFound)
	}
	return 0, fmt.Errorf("insert SBOM of artifact %d: %w", b.ArtifactID, err)
}

// selectSBOM reads an SBOM (b) with its artifact (a); the document column
// is replaced by an empty blob unless asked for.
func selectSBOM(withDocument bool) string {
	doc := "x''"
	if withDocument {
		doc = "b.document"
	}
	return `SELECT b.id, b.artifact_id, a.name, a.version, a.digest, a.size, a.channel, a.builder_id, a.source_repo, a.source_commit, a.created_at,
		b.format, b.document_digest, ` + doc + `, b.envelope, b.key_id, b.attached_by, b.attached_at, b.log_index
		FROM sboms b JOIN artifacts a ON a.id = b.artifact_id`
}

// SBOM returns the SBOM of artifact artifactID.
func (s *Store) SBOM(ctx context.Context, artifactID int64, withDocument bool) (*catalog.SBOM, error) {
	return s.readSBOM(ctx, fmt.Sprintf("artifact %d", artifactID), withDocument, selectSBOM(withDocument)+` WHERE b.artifact_id = ?`, artifactID)
}

// HasSBOM reports whether artifact artifactID has an SBOM.
func (s *Store) HasSBOM(ctx context.Context, artifactID int64) (bool, error) {
	var has bool
	if err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM sboms WHERE artifact_id = ?)`, artifactID).Scan(&has); err != nil {
		return false, fmt.Errorf("look up the SBOM of artifact %d: %w", artifactID, err)
	}
	return has, nil
}

// SBOMByDigest returns the oldest SBOM of the logged artifacts with digest.
func (s *Store) SBOMByDigest(ctx context.Context, digest string, withDocument bool) (*catalog.SBOM, error) {
	return s.readSBOM(ctx, digest, withDocument, selectSBOM(withDocument)+`
		WHERE a.digest = ? AND a.checkpoint IS NOT NULL ORDER BY b.id LIMIT 1`, digest)
}

func (s *Store) readSBOM(ctx context.Context, what string, withDocument bool, query string, arg any) (*catalog.SBOM, error) {
	var (
		b                 catalog.SBOM
		a                 = &b.Artifact
		created, attached string
		index             int64
	)
	err := s.db.QueryRowContext(ctx, query, arg).Scan(&b.ID, &b.ArtifactID, &a.Name, &a.Version, &a.Digest, &a.Size, &a.Channel, &a.BuilderID,
		&a.SourceRepo, &a.SourceCommit, &created, &b.Format, &b.DocumentDigest, &b.Document, &b.Envelope, &b.KeyID, &b.AttachedBy, &attached, &index)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("SBOM of %s: %w", what, catalog.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read SBOM of %s: %w", what, err)
	}
	if a.CreatedAt, err = parseTime(created); err != nil {
		return nil, fmt.Errorf("read SBOM of %s: %w", what, err)
	}
	if b.AttachedAt, err = parseTime(attached); err != nil {
		return nil, fmt.Errorf("read SBOM of %s: %w", what, err)
	}
	b.LogIndex = uint64(index)
	if !withDocument {
		b.Document = nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT purl, name, version, license FROM sbom_components WHERE sbom_id = ? ORDER BY seq`, b.ID)
	if err != nil {
		return nil, fmt.Errorf("read SBOM components of %s: %w", what, err)
	}
	defer rows.Close()
	for rows.Next() {
		var c sbom.Component
		if err := rows.Scan(&c.PURL, &c.Name, &c.Version, &c.License); err != nil {
			return nil, fmt.Errorf("read SBOM components of %s: %w", what, err)
		}
		b.Components = append(b.Components, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read SBOM components of %s: %w", what, err)
	}
	return &b, nil
}
