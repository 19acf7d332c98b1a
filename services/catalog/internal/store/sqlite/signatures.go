package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// InsertSignature stores sig as pending.
func (s *Store) InsertSignature(ctx context.Context, sig *catalog.Signature) (int64, error) {
	var id int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`INSERT INTO signatures
			(artifact_id, envelope, key_id, actor, created_at, leaf, search_from) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			sig.ArtifactID, sig.Envelope, sig.KeyID, sig.Actor, formatTime(sig.CreatedAt), sig.Entry.Leaf, int64(sig.Entry.SearchFrom))
		if err != nil {
			return err
		}
		id, err = res.LastInsertId()
		return err
	})
	if err != nil {
		if isUnique(err) {
			return 0, fmt.Errorf("insert signature of artifact %d: a signature is pending: %w", sig.ArtifactID, catalog.ErrAlreadyExists)
		}
		return 0, fmt.Errorf("insert signature of artifact %d: %w", sig.ArtifactID, err)
	}
	return id, nil
}

const signatureColumns = `id, artifact_id, envelope, key_id, actor, created_at, leaf, search_from, log_index, proof, checkpoint`

func scanSignature(row scanner) (*catalog.Signature, error) {
	var (
		sig       catalog.Signature
		created   string
		from      int64
		index     sql.NullInt64
		proofFlat []byte
	)
	if err := row.Scan(&sig.ID, &sig.ArtifactID, &sig.Envelope, &sig.KeyID, &sig.Actor, &created,
		&sig.Entry.Leaf, &from, &index, &proofFlat, &sig.Entry.Checkpoint); err != nil {
		return nil, err
	}
	if err := finishSignature(&sig, created, from, index, proofFlat); err != nil {
		return nil, err
	}
	return &sig, nil
}

// PendingSignature returns the artifact's pending signature.
func (s *Store) PendingSignature(ctx context.Context, artifactID int64) (*catalog.Signature, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+signatureColumns+` FROM signatures WHERE artifact_id = ? AND checkpoint IS NULL`, artifactID)
	sig, err := scanSignature(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("pending signature of artifact %d: %w", artifactID, catalog.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read pending signature of artifact %d: %w", artifactID, err)
	}
	return sig, nil
}

// Signatures returns every signature of an artifact, logged or pending, in
// the order they were recorded: with the envelope the artifact was recorded
// with, the complete history of its envelopes, for audits.
func (s *Store) Signatures(ctx context.Context, artifactID int64) ([]*catalog.Signature, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+signatureColumns+` FROM signatures WHERE artifact_id = ? ORDER BY id`, artifactID)
	if err != nil {
		return nil, fmt.Errorf("read signatures of artifact %d: %w", artifactID, err)
	}
	defer rows.Close()
	var out []*catalog.Signature
	for rows.Next() {
		sig, err := scanSignature(rows)
		if err != nil {
			return nil, fmt.Errorf("read signatures of artifact %d: %w", artifactID, err)
		}
		out = append(out, sig)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read signatures of artifact %d: %w", artifactID, err)
	}
	return out, nil
}
