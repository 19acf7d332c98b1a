package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// sbomMigration adds SBOMs, as SQLite's (store/sqlite): one per artifact,
// its document and signed statement, its components in document order,
// indexed by purl.
var sbomMigration = migration{ddl: `CREATE TABLE sboms (
		id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		artifact_id     BIGINT      NOT NULL UNIQUE REFERENCES artifacts (id),
		format          TEXT        NOT NULL, -- cyclonedx-json or spdx-json
		document_digest TEXT        NOT NULL, -- sha256:<hex> of document
		document        BYTEA       NOT NULL,
		envelope        BYTEA       NOT NULL, -- DSSE over the SBOM statement
		key_id          TEXT        NOT NULL,
		attached_by     TEXT        NOT NULL,
		attached_at     TIMESTAMPTZ NOT NULL,
		log_index       BIGINT      NOT NULL  -- of the sbom.attached entry
	);
	CREATE TABLE sbom_components (
		sbom_id BIGINT  NOT NULL REFERENCES sboms (id),
		seq     INTEGER NOT NULL, -- document order
		purl    TEXT    NOT NULL,
		name    TEXT    NOT NULL,
		version TEXT    NOT NULL,
		license TEXT    NOT NULL,
		PRIMARY KEY (sbom_id, seq)
	);
	CREATE INDEX sbom_components_by_purl ON sbom_components (purl, sbom_id);`}

// InsertSBOM stores b and its components in one transaction.
func (s *Store) InsertSBOM(ctx context.Context, b *catalog.SBOM) (int64, error) {
	var id int64
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO sboms (artifact_id, format, document_digest, document, envelope, key_id, attached_by, attached_at, log_index)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`,
			b.ArtifactID, b.Format, b.DocumentDigest, b.Document, b.Envelope, b.KeyID, b.AttachedBy, b.AttachedAt.UTC(), int64(b.LogIndex)).Scan(&id); err != nil {
			return err
		}
		rows := make([][]any, len(b.Components))
		for i, c := range b.Components {
			p, _ := catalog.ComponentPackage(c.PURL)
			rows[i] = []any{id, int32(i), c.PURL, c.Name, c.Version, c.License, p.Ecosystem, p.Name}
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"sbom_components"}, []string{"sbom_id", "seq", "purl", "name", "version", "license", "pkg_ecosystem", "pkg_name"}, pgx.CopyFromRows(rows))
		return err
	})
	switch {
	case err == nil:
		return id, nil
	case isCode(err, uniqueViolation):
		return 0, fmt.Errorf("insert SBOM of artifact %d: %w", b.ArtifactID, catalog.ErrAlreadyExists)
	case isCode(err, foreignKeyViolation):
		return 0, fmt.Errorf("insert SBOM of artifact %d: %w", b.ArtifactID, catalog.ErrNotFound)
	}
	return 0, fmt.Errorf("insert SBOM of artifact %d: %w", b.ArtifactID, err)
}

// selectSBOM reads an SBOM (b) with its artifact (a); the document column
// is replaced by an empty one unless asked for.
func selectSBOM(withDocument bool) string {
	doc := "''::bytea"
	if withDocument {
		doc = "b.document"
	}
	return `SELECT b.id, b.artifact_id, a.name, a.version, a.digest, a.size, a.channel, a.builder_id, a.source_repo, a.source_commit, a.created_at,
		b.format, b.document_digest, ` + doc + `, b.envelope, b.key_id, b.attached_by, b.attached_at, b.log_index
		FROM sboms b JOIN artifacts a ON a.id = b.artifact_id`
}

// SBOM returns the SBOM of artifact artifactID.
func (s *Store) SBOM(ctx context.Context, artifactID int64, withDocument bool) (*catalog.SBOM, error) {
	return s.readSBOM(ctx, fmt.Sprintf("artifact %d", artifactID), withDocument, selectSBOM(withDocument)+` WHERE b.artifact_id = $1`, artifactID)
}

// HasSBOM reports whether artifact artifactID has an SBOM.
func (s *Store) HasSBOM(ctx context.Context, artifactID int64) (bool, error) {
	var has bool
	if err := s.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sboms WHERE artifact_id = $1)`, artifactID).Scan(&has); err != nil {
		return false, fmt.Errorf("look up the SBOM of artifact %d: %w", artifactID, err)
	}
	return has, nil
}

// SBOMByDigest returns the oldest SBOM of the logged artifacts with digest.
func (s *Store) SBOMByDigest(ctx context.Context, digest string, withDocument bool) (*catalog.SBOM, error) {
	return s.readSBOM(ctx, digest, withDocument, selectSBOM(withDocument)+`
		WHERE a.digest = $1 AND a.checkpoint IS NOT NULL ORDER BY b.id LIMIT 1`, digest)
}

func (s *Store) readSBOM(ctx context.Context, what string, withDocument bool, query string, arg any) (*catalog.SBOM, error) {
	var (
		b     catalog.SBOM
		a     = &b.Artifact
		index int64
	)
	// One transaction, so that the components are the row's even while
	// another catalog process writes.
	err := pgx.BeginTxFunc(ctx, s.db, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, query, arg).Scan(&b.ID, &b.ArtifactID, &a.Name, &a.Version, &a.Digest, &a.Size, &a.Channel, &a.BuilderID,
			&a.SourceRepo, &a.SourceCommit, &a.CreatedAt, &b.Format, &b.DocumentDigest, &b.Document, &b.Envelope, &b.KeyID, &b.AttachedBy,
			&b.AttachedAt, &index); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT purl, name, version, license FROM sbom_components WHERE sbom_id = $1 ORDER BY seq`, b.ID)
		if err != nil {
			return err
		}
		b.Components, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (sbom.Component, error) {
			var c sbom.Component
			err := r.Scan(&c.PURL, &c.Name, &c.Version, &c.License)
			return c, err
		})
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("SBOM of %s: %w", what, catalog.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read SBOM of %s: %w", what, err)
	}
	a.CreatedAt, b.AttachedAt, b.LogIndex = a.CreatedAt.UTC(), b.AttachedAt.UTC(), uint64(index)
	if !withDocument {
		b.Document = nil
	}
	if len(b.Components) == 0 {
		b.Components = nil
	}
	return &b, nil
}
