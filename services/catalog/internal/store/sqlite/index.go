package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlquery"
)

// indexMigration adds the log size up to which every event entry is
// stored: the catalog's indexer raises it in the transaction that stores
// the events below it (docs/decisions/0046-log-is-the-events-write-ahead-record.md).
var indexMigration = migration{ddl: `CREATE TABLE log_indexed (
		id   INTEGER PRIMARY KEY CHECK (id = 1),
		size INTEGER NOT NULL CHECK (size >= 0)
	);
	INSERT INTO log_indexed (id, size) VALUES (1, 0);`}

// indexRowsPerInsert is how many event rows one INSERT of IndexEvents
// holds: 10 parameters each, well under SQLite's limit of 32,766.
const indexRowsPerInsert = 128

// IndexedSize returns the log size up to which every event entry is stored.
func (s *Store) IndexedSize(ctx context.Context) (uint64, error) {
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT size FROM log_indexed WHERE id = 1`).Scan(&n); err != nil {
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
	proofs, err := sqlquery.IndexProofs(events, size)
	if err != nil {
		return err
	}
	err = s.writeDerived(ctx, func(tx *sql.Tx) error {
		// Many rows a statement: the driver parses a statement's SQL again
		// on every execution, which cost more than the inserts themselves.
		for start := 0; start < len(events); start += indexRowsPerInsert {
			chunk := events[start:min(start+indexRowsPerInsert, len(events))]
			var q strings.Builder
			q.WriteString(`INSERT INTO events
			(type, actor, subject_digest, details, created_at, leaf, search_from, log_index, proof, checkpoint) VALUES `)
			args := make([]any, 0, 10*len(chunk))
			for i, e := range chunk {
				if i > 0 {
					q.WriteString(", ")
				}
				q.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
				idx := int64(e.Entry.Index)
				args = append(args, e.Type, e.Actor, e.SubjectDigest, e.Details, formatTime(e.CreatedAt), e.Entry.Leaf,
					idx, idx, proofs[start+i], e.Entry.Checkpoint)
			}
			q.WriteString(" ON CONFLICT (log_index) DO NOTHING")
			if _, err := tx.Exec(q.String(), args...); err != nil {
				return err
			}
		}
		_, err = tx.Exec(`UPDATE log_indexed SET size = ? WHERE id = 1 AND size < ?`, int64(size), int64(size))
		return err
	})
	if err != nil {
		return fmt.Errorf("index %d events up to log size %d: %w", len(events), size, err)
	}
	return nil
}
