package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlquery"
)

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
	query, args := sqlquery.Search(q, afterID, limit, sqlquery.Question)
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("search artifacts: %w", err)
	}
	out, err := scanListed(rows)
	if err != nil {
		return nil, fmt.Errorf("search artifacts: %w", err)
	}
	return out, nil
}

// InsertDeployment stores d.
func (s *Store) InsertDeployment(ctx context.Context, d *catalog.Deployment) (int64, error) {
	var id int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`INSERT INTO deployments (artifact_id, environment, actor, deployed_at) VALUES (?, ?, ?, ?)`,
			d.ArtifactID, d.Environment, d.Actor, formatTime(d.DeployedAt))
		if err != nil {
			return err
		}
		id, err = res.LastInsertId()
		return err
	})
	if err != nil {
		if isForeignKey(err) {
			return 0, fmt.Errorf("insert deployment of artifact %d: %w", d.ArtifactID, catalog.ErrNotFound)
		}
		return 0, fmt.Errorf("insert deployment of artifact %d to %s: %w", d.ArtifactID, d.Environment, err)
	}
	return id, nil
}

func isForeignKey(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}
