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
// holds; the rows left over go one a statement. Both statements are
// prepared once, so their parse no longer argues for many rows; the driver
// binds each parameter by looking it up among all of the statement's
// arguments (quadratic in their number), which made 128 rows (1,280
// parameters) cost more binding than inserting.
// With the details no longer stored twice, BenchmarkIndexEvents went from
// 24.5–27.1 µs of CPU an event to 12.1–15.2 in batches of 512 (decision
// 0110).
const indexRowsPerInsert = 16

// indexColumns is the number of columns IndexEvents sets per row.
const indexColumns = 9

// indexInsert returns the INSERT of IndexEvents for n rows.
func indexInsert(n int) string {
	var q strings.Builder
	q.WriteString(`INSERT INTO events
		(type, actor, subject_digest, created_at, leaf, search_from, log_index, proof, checkpoint) VALUES `)
	for i := range n {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?)")
	}
	q.WriteString(" ON CONFLICT (log_index) DO NOTHING")
	return q.String()
}

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
		// Several rows a statement, each statement prepared once: the
		// driver parses a statement's SQL again on every execution, which
		// cost more than the inserts themselves.
		full, one := tx.Stmt(s.indexFull), tx.Stmt(s.indexOne)
		args := make([]any, 0, indexColumns*indexRowsPerInsert)
		for start := 0; start < len(events); {
			n := indexRowsPerInsert
			stmt := full
			if len(events)-start < n {
				n, stmt = 1, one
			}
			args = args[:0]
			for i, e := range events[start : start+n] {
				idx := int64(e.Entry.Index)
				// The details are in the leaf; the details column is left
				// NULL rather than holding a second copy (decision 0110).
				args = append(args, e.Type, e.Actor, e.SubjectDigest, formatTime(e.CreatedAt), e.Entry.Leaf,
					idx, idx, proofs[start+i], e.Entry.Checkpoint)
			}
			if _, err := stmt.Exec(args...); err != nil {
				return err
			}
			start += n
		}
		_, err = tx.Exec(`UPDATE log_indexed SET size = ? WHERE id = 1 AND size < ?`, int64(size), int64(size))
		return err
	})
	if err != nil {
		return fmt.Errorf("index %d events up to log size %d: %w", len(events), size, err)
	}
	return nil
}
