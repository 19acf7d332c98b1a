package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlquery"
)

// InsertSignature stores sig as pending.
func (s *Store) InsertSignature(ctx context.Context, sig *catalog.Signature) (int64, error) {
	var id int64
	err := s.db.QueryRow(ctx, `INSERT INTO signatures (artifact_id, envelope, key_id, actor, created_at, leaf, search_from)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
		sig.ArtifactID, sig.Envelope, sig.KeyID, sig.Actor, sig.CreatedAt.UTC(), sig.Entry.Leaf, int64(sig.Entry.SearchFrom)).Scan(&id)
	if err != nil {
		if isCode(err, uniqueViolation) {
			return 0, fmt.Errorf("insert signature of artifact %d: a signature is pending: %w", sig.ArtifactID, catalog.ErrAlreadyExists)
		}
		return 0, fmt.Errorf("insert signature of artifact %d: %w", sig.ArtifactID, err)
	}
	return id, nil
}

const signatureColumns = `id, artifact_id, envelope, key_id, actor, created_at, leaf, search_from, log_index, proof, checkpoint`

func scanSignature(row pgx.Row) (*catalog.Signature, error) {
	var (
		sig       catalog.Signature
		created   time.Time
		from      int64
		index     *int64
		proofFlat []byte
	)
	if err := row.Scan(&sig.ID, &sig.ArtifactID, &sig.Envelope, &sig.KeyID, &sig.Actor, &created,
		&sig.Entry.Leaf, &from, &index, &proofFlat, &sig.Entry.Checkpoint); err != nil {
		return nil, err
	}
	sig.CreatedAt = created.UTC()
	if err := sqlquery.FillEntry(&sig.Entry, from, index, proofFlat); err != nil {
		return nil, fmt.Errorf("signature %d: %w", sig.ID, err)
	}
	return &sig, nil
}

// PendingSignature returns the artifact's pending signature.
func (s *Store) PendingSignature(ctx context.Context, artifactID int64) (*catalog.Signature, error) {
	sigs, err := s.signatures(ctx, `SELECT `+signatureColumns+` FROM signatures WHERE artifact_id = $1 AND checkpoint IS NULL`, artifactID)
	if err != nil {
		return nil, fmt.Errorf("read pending signature of artifact %d: %w", artifactID, err)
	}
	if len(sigs) == 0 {
		return nil, fmt.Errorf("pending signature of artifact %d: %w", artifactID, catalog.ErrNotFound)
	}
	return sigs[0], nil
}

// Signatures returns every signature of an artifact, logged or pending, in
// the order they were recorded: with the envelope the artifact was recorded
// with, the complete history of its envelopes, for audits.
func (s *Store) Signatures(ctx context.Context, artifactID int64) ([]*catalog.Signature, error) {
	sigs, err := s.signatures(ctx, `SELECT `+signatureColumns+` FROM signatures WHERE artifact_id = $1 ORDER BY id`, artifactID)
	if err != nil {
		return nil, fmt.Errorf("read signatures of artifact %d: %w", artifactID, err)
	}
	return sigs, nil
}

func (s *Store) signatures(ctx context.Context, query string, args ...any) ([]*catalog.Signature, error) {
	rows, err := s.db.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*catalog.Signature
	for rows.Next() {
		sig, err := scanSignature(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sig)
	}
	return out, rows.Err()
}

// ListArtifacts returns up to limit logged artifacts after afterID.
func (s *Store) ListArtifacts(ctx context.Context, keyID string, afterID int64, limit int) ([]catalog.Listed, error) {
	l, err := s.SearchArtifacts(ctx, catalog.Query{KeyID: keyID}, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("list artifacts: %w", err)
	}
	return l, nil
}

// SearchArtifacts returns up to limit logged artifacts matching q after
// afterID.
func (s *Store) SearchArtifacts(ctx context.Context, q catalog.Query, afterID int64, limit int) ([]catalog.Listed, error) {
	query, args := sqlquery.Search(q, afterID, limit, sqlquery.Dollar)
	rows, err := s.db.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("search artifacts: %w", err)
	}
	defer rows.Close()
	var out []catalog.Listed
	for rows.Next() {
		var (
			l catalog.Listed
			a = &l.Artifact
		)
		if err := rows.Scan(&l.ID, &a.Name, &a.Version, &a.Digest, &a.Size, &a.Channel, &a.BuilderID, &a.SourceRepo, &a.SourceCommit,
			&a.CreatedAt, &l.KeyID, &l.SignedAt); err != nil {
			return nil, fmt.Errorf("search artifacts: %w", err)
		}
		a.CreatedAt, l.SignedAt = a.CreatedAt.UTC(), l.SignedAt.UTC()
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search artifacts: %w", err)
	}
	return out, nil
}

// InsertDeployment stores d.
func (s *Store) InsertDeployment(ctx context.Context, d *catalog.Deployment) (int64, error) {
	var id int64
	err := s.db.QueryRow(ctx, `INSERT INTO deployments (artifact_id, environment, actor, deployed_at) VALUES ($1, $2, $3, $4) RETURNING id`,
		d.ArtifactID, d.Environment, d.Actor, d.DeployedAt.UTC()).Scan(&id)
	if err != nil {
		if isCode(err, foreignKeyViolation) {
			return 0, fmt.Errorf("insert deployment of artifact %d: %w", d.ArtifactID, catalog.ErrNotFound)
		}
		return 0, fmt.Errorf("insert deployment of artifact %d to %s: %w", d.ArtifactID, d.Environment, err)
	}
	return id, nil
}
