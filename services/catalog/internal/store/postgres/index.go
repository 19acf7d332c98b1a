package postgres

import (
	"context"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlquery"
)

// indexMigration adds the log size up to which every event entry is
// stored: the catalog's indexer raises it in the transaction that stores
// the events below it (docs/decisions/0046-log-is-the-events-write-ahead-record.md).
var indexMigration = migration{ddl: `CREATE TABLE log_indexed (
		id   INTEGER PRIMARY KEY CHECK (id = 1),
		size BIGINT  NOT NULL CHECK (size >= 0)
	);
	INSERT INTO log_indexed (id, size) VALUES (1, 0);`}

// IndexedSize returns the log size up to which every event entry is stored.
func (s *Store) IndexedSize(ctx context.Context) (uint64, error) {
	var n int64
	if err := s.db.QueryRow(ctx, `SELECT size FROM log_indexed WHERE id = 1`).Scan(&n); err != nil {
		return 0, fmt.Errorf("read indexed log size: %w", err)
	}
	if n < 0 {
		return 0, fmt.Errorf("indexed log size %d is negative", n)
	}
	return uint64(n), nil
}

// IndexEvents stores logged events and raises the indexed size to size, in
// one transaction; an event whose log index is already stored is skipped.
func (s *Store) IndexEvents(ctx context.Context, events []*catalog.Event, size uint64) error {
	if size > math.MaxInt64 {
		return fmt.Errorf("index events: log size %d out of range", size)
	}
	batch := &pgx.Batch{}
	// The rows are rebuilt from the log if lost, with the indexed size
	// raised in the same transaction: the commit need not wait for the WAL
	// flush (a crash may undo the last such commits, never half of one;
	// docs/decisions/0068-catalog-event-path-cpu-and-fsyncs.md).
	batch.Queue(`SET LOCAL synchronous_commit TO OFF`)
	proofs, err := sqlquery.IndexProofs(events, size)
	if err != nil {
		return err
	}
	for i, e := range events {
		idx := int64(e.Entry.Index)
		// The details are in the leaf; the details column is left NULL
		// rather than holding a second copy (decision 0110).
		batch.Queue(`INSERT INTO events
			(type, actor, subject_digest, created_at, leaf, search_from, log_index, proof, checkpoint)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (log_index) DO NOTHING`,
			e.Type, e.Actor, e.SubjectDigest, e.CreatedAt.UTC(), e.Entry.Leaf, idx, idx, proofs[i], e.Entry.Checkpoint)
	}
	batch.Queue(`UPDATE log_indexed SET size = $1 WHERE id = 1 AND size < $1`, int64(size))
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, batch).Close()
	})
	if err != nil {
		return fmt.Errorf("index %d events up to log size %d: %w", len(events), size, err)
	}
	return nil
}
