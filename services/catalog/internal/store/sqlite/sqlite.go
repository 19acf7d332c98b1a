// Package sqlite stores the catalog in SQLite through the pure-Go
// modernc.org/sqlite driver.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/url"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlquery"
)

// migration is one step of the schema: DDL, then optionally Go code that
// fills new columns from existing rows, in the same transaction.
type migration struct {
	ddl  string
	fill func(ctx context.Context, tx *sql.Tx) error
}

// migrations are applied in order; PRAGMA user_version records how many
// have been. Append, never edit.
var migrations = []migration{
	{ddl: `CREATE TABLE artifacts (
		id            INTEGER PRIMARY KEY,
		name          TEXT    NOT NULL,
		version       TEXT    NOT NULL,
		digest        TEXT    NOT NULL,
		size          INTEGER NOT NULL,
		channel       TEXT    NOT NULL,
		builder_id    TEXT    NOT NULL,
		source_repo   TEXT    NOT NULL,
		source_commit TEXT    NOT NULL,
		created_at    TEXT    NOT NULL, -- RFC 3339, UTC
		envelope      BLOB    NOT NULL,
		leaf          BLOB    NOT NULL, -- the exact log entry bytes
		search_from   INTEGER NOT NULL, -- log size before the first append
		log_index     INTEGER,          -- NULL until the log assigns one
		proof         BLOB,             -- inclusion proof, 32-byte hashes concatenated
		checkpoint    BLOB,             -- NULL while pending
		UNIQUE (name, version),
		UNIQUE (log_index)
	);
	CREATE INDEX artifacts_by_digest ON artifacts (digest);
	CREATE INDEX artifacts_pending ON artifacts (id) WHERE checkpoint IS NULL;
	CREATE TABLE events (
		id             INTEGER PRIMARY KEY,
		type           TEXT    NOT NULL,
		actor          TEXT    NOT NULL,
		subject_digest TEXT    NOT NULL,
		details        BLOB,
		created_at     TEXT    NOT NULL,
		leaf           BLOB    NOT NULL,
		search_from    INTEGER NOT NULL,
		log_index      INTEGER,
		proof          BLOB,
		checkpoint     BLOB,
		UNIQUE (log_index)
	);
	CREATE INDEX events_by_subject ON events (subject_digest);
	CREATE INDEX events_pending ON events (id) WHERE checkpoint IS NULL;`},
	// Re-signatures: the history of an artifact's envelopes, and key ids to
	// list artifacts by the key that signed their current envelope.
	{ddl: `ALTER TABLE artifacts ADD COLUMN key_id TEXT NOT NULL DEFAULT ''; -- of envelope's (first) signature
	ALTER TABLE artifacts ADD COLUMN signature_id INTEGER REFERENCES signatures (id); -- the current re-signature; NULL: envelope is current
	ALTER TABLE artifacts ADD COLUMN current_key_id TEXT NOT NULL DEFAULT ''; -- of the current envelope's signature
	CREATE TABLE signatures (
		id          INTEGER PRIMARY KEY,
		artifact_id INTEGER NOT NULL REFERENCES artifacts (id),
		envelope    BLOB    NOT NULL,
		key_id      TEXT    NOT NULL,
		actor       TEXT    NOT NULL,
		created_at  TEXT    NOT NULL,
		leaf        BLOB    NOT NULL,
		search_from INTEGER NOT NULL,
		log_index   INTEGER,
		proof       BLOB,
		checkpoint  BLOB,
		UNIQUE (log_index)
	);
	CREATE INDEX signatures_by_artifact ON signatures (artifact_id, id);
	-- At most one pending signature per artifact: it is finished before
	-- another is recorded, so the history is in log order.
	CREATE UNIQUE INDEX signatures_pending ON signatures (artifact_id) WHERE checkpoint IS NULL;
	CREATE INDEX artifacts_by_current_key ON artifacts (current_key_id, id);`,
		fill: fillKeyIDs},
	// Search: an index per filter, in ID order for paging (SQLite appends
	// the rowid, id, to every index; artifacts_by_digest and
	// artifacts_by_current_key serve those filters), and deployments.
	{ddl: `CREATE INDEX artifacts_by_builder ON artifacts (builder_id, id);
	CREATE INDEX artifacts_by_source_repo ON artifacts (source_repo, id);
	CREATE INDEX artifacts_by_source_commit ON artifacts (source_commit, id);
	CREATE INDEX artifacts_by_channel ON artifacts (channel, id);
	CREATE INDEX artifacts_by_name ON artifacts (name, id);
	CREATE TABLE deployments (
		id          INTEGER PRIMARY KEY,
		artifact_id INTEGER NOT NULL REFERENCES artifacts (id),
		environment TEXT    NOT NULL,
		actor       TEXT    NOT NULL,
		deployed_at TEXT    NOT NULL
	);
	CREATE INDEX deployments_by_environment ON deployments (environment, artifact_id);
	CREATE INDEX deployments_by_artifact ON deployments (artifact_id, id);`},
	lineageMigration,
	indexMigration,
	sbomMigration,
	advisoryMigration,
	advisoryRowidMigration,
	componentPackageMigration,
}

// fillKeyIDs sets the key ids of the artifacts recorded before the catalog
// stored key ids, from their envelopes.
// A stored envelope that no longer parses keeps an empty key id rather than
// keeping the catalog from starting: it is still served, and listed as
// signed by no key.
func fillKeyIDs(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT id, envelope FROM artifacts ORDER BY id`)
	if err != nil {
		return err
	}
	keys := map[int64]string{}
	for rows.Next() {
		var (
			id  int64
			env []byte
		)
		if err := rows.Scan(&id, &env); err != nil {
			rows.Close()
			return err
		}
		if k, err := catalog.EnvelopeKeyID(env); err == nil {
			keys[id] = k
		}
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return err
	}
	for id, k := range keys {
		if _, err := tx.ExecContext(ctx, `UPDATE artifacts SET key_id = ?, current_key_id = ? WHERE id = ?`, k, k, id); err != nil {
			return fmt.Errorf("artifact %d: %w", id, err)
		}
	}
	return nil
}

// Store is a catalog.Store in one SQLite database file.
//
// Writes are group-committed: one writer goroutine runs every write waiting
// at that moment in one transaction, each in its own savepoint (a write
// alone needs none), so that many concurrent records share one fsync
// instead of queueing for one each. A write returns only after its
// transaction is durable.
type Store struct {
	db     *sql.DB
	ops    chan writeOp
	closed chan struct{}
	done   chan struct{}
	once   sync.Once
	// indexFull and indexOne are IndexEvents' INSERTs of
	// indexRowsPerInsert rows and of one, prepared once for the store
	// (database/sql prepares each once per connection).
	indexFull, indexOne *sql.Stmt
}

type writeOp struct {
	fn     func(tx *sql.Tx) error
	result chan error
	// derived says the write only holds rows rebuilt from the log (the
	// indexer's): its commit need not reach the disk before it returns.
	derived bool
}

// maxGroup bounds how many writes share a transaction.
const maxGroup = 256

var _ catalog.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path in WAL mode with full
// synchronous commits (but for the indexer's derived rows, see
// writeDerived), and brings its schema up to date.
func Open(ctx context.Context, path string) (*Store, error) {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(1)"} {
		q.Add("_pragma", p)
	}
	// Write transactions take the write lock at BEGIN, so two of them
	// wait for each other (busy_timeout) instead of failing to upgrade.
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(8)
	db.SetConnMaxIdleTime(time.Minute)
	s := &Store{db: db, ops: make(chan writeOp), closed: make(chan struct{}), done: make(chan struct{})}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if s.indexFull, err = db.PrepareContext(ctx, indexInsert(indexRowsPerInsert)); err == nil {
		s.indexOne, err = db.PrepareContext(ctx, indexInsert(1))
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: prepare the event INSERT: %w", path, err)
	}
	go s.writer()
	return s, nil
}

var errClosed = errors.New("catalog database closed")

// write runs fn in a group-committed transaction and returns its error, or
// the commit's. It waits for the commit even if ctx ends meanwhile, so that
// a nil error always means durable and an error means not written.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return s.enqueue(ctx, writeOp{fn: fn, result: make(chan error, 1)})
}

// writeDerived is write for rows that are rebuilt from the log if lost:
// a group of only such writes commits with synchronous=NORMAL, which in
// WAL mode skips the fsync but keeps each commit atomic. A power loss may
// drop the last such commits, with the indexed size they raised, so the
// indexer reads those entries again; the next FULL commit syncs them
// anyway (docs/decisions/0068-catalog-event-path-cpu-and-fsyncs.md).
func (s *Store) writeDerived(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return s.enqueue(ctx, writeOp{fn: fn, result: make(chan error, 1), derived: true})
}

func (s *Store) enqueue(ctx context.Context, op writeOp) error {
	select {
	case s.ops <- op:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closed:
		return errClosed
	}
	return <-op.result
}

func (s *Store) writer() {
	defer close(s.done)
	for {
		var batch []writeOp
		select {
		case op := <-s.ops:
			batch = append(batch, op)
		case <-s.closed:
			return
		}
	more:
		for len(batch) < maxGroup {
			select {
			case op := <-s.ops:
				batch = append(batch, op)
			default:
				break more
			}
		}
		s.commit(batch)
	}
}

func (s *Store) commit(batch []writeOp) {
	results := make([]error, len(batch))
	defer func() {
		for i, op := range batch {
			op.result <- results[i]
		}
	}()
	// Writes are not cancelled half-way: a commit that a caller gave up on
	// must still tell the others the truth.
	ctx := context.Background()
	mode := "NORMAL"
	for _, op := range batch {
		if !op.derived {
			mode = "FULL"
		}
	}
	// The setting is the connection's, and cannot change inside a
	// transaction: set it on the connection the transaction runs on, every
	// time, so that a pooled connection never carries NORMAL into a write
	// that needs FULL.
	conn, err := s.db.Conn(ctx)
	if err != nil {
		for i := range results {
			results[i] = fmt.Errorf("get a connection: %w", err)
		}
		return
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = "+mode); err != nil {
		for i := range results {
			results[i] = fmt.Errorf("set synchronous=%s: %w", mode, err)
		}
		return
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		for i := range results {
			results[i] = fmt.Errorf("begin transaction: %w", err)
		}
		return
	}
	if len(batch) == 1 {
		// A write alone needs no savepoint: if it fails, the whole
		// transaction is rolled back. The savepoint made SQLite copy
		// every page the write touched into its sub-journal, and the
		// indexer's writes (one a batch of events) usually come alone.
		if err := batch[0].fn(tx); err != nil {
			results[0] = err
			tx.Rollback()
			return
		}
		if err := tx.Commit(); err != nil {
			results[0] = fmt.Errorf("commit: %w", err)
		}
		return
	}
	for i, op := range batch {
		if _, err := tx.ExecContext(ctx, "SAVEPOINT op"); err != nil {
			results[i] = err
			continue
		}
		if err := op.fn(tx); err != nil {
			results[i] = err
			if _, rerr := tx.ExecContext(ctx, "ROLLBACK TO op"); rerr != nil {
				// The transaction is unusable: fail the whole group.
				tx.Rollback()
				for j := range results {
					if results[j] == nil {
						results[j] = fmt.Errorf("roll back one write of a group: %w", rerr)
					}
				}
				return
			}
		}
		if _, err := tx.ExecContext(ctx, "RELEASE op"); err != nil && results[i] == nil {
			results[i] = err
		}
	}
	if err := tx.Commit(); err != nil {
		for i := range results {
			if results[i] == nil {
				results[i] = fmt.Errorf("commit: %w", err)
			}
		}
	}
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var version int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this catalog knows (%d): run a newer catalog", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i].ddl); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", i+1, err)
		}
		if f := migrations[i].fill; f != nil {
			if err := f(ctx, tx); err != nil {
				return fmt.Errorf("migrate schema to version %d: fill new columns: %w", i+1, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
		return fmt.Errorf("write schema version: %w", err)
	}
	return tx.Commit()
}

// Close stops the writer and closes the database. Writes after Close fail.
func (s *Store) Close() error {
	s.once.Do(func() { close(s.closed) })
	<-s.done
	return s.db.Close()
}

// InsertArtifact stores r as pending.
func (s *Store) InsertArtifact(ctx context.Context, r *catalog.ArtifactRecord) (int64, error) {
	a := r.Artifact
	var id int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`INSERT INTO artifacts
			(name, version, digest, size, channel, builder_id, source_repo, source_commit, created_at, envelope, key_id, current_key_id, leaf, search_from)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			a.Name, a.Version, a.Digest, a.Size, a.Channel, a.BuilderID, a.SourceRepo, a.SourceCommit,
			formatTime(a.CreatedAt), r.Envelope, r.KeyID, r.KeyID, r.Entry.Leaf, int64(r.Entry.SearchFrom))
		if err != nil {
			return err
		}
		if id, err = res.LastInsertId(); err != nil {
			return err
		}
		return insertEdges(tx, id, a.Digest, r.Dependencies)
	})
	if err != nil {
		if isUnique(err) {
			return 0, fmt.Errorf("insert artifact %s@%s: %w", a.Name, a.Version, catalog.ErrAlreadyExists)
		}
		return 0, fmt.Errorf("insert artifact %s@%s: %w", a.Name, a.Version, err)
	}
	return id, nil
}

// selectArtifacts reads artifacts (a) with their current re-signature (s).
const selectArtifacts = `SELECT a.id, a.name, a.version, a.digest, a.size, a.channel, a.builder_id, a.source_repo, a.source_commit,
	a.created_at, a.envelope, a.key_id, a.leaf, a.search_from, a.log_index, a.proof, a.checkpoint,
	s.id, s.envelope, s.key_id, s.actor, s.created_at, s.leaf, s.search_from, s.log_index, s.proof, s.checkpoint
	FROM artifacts a LEFT JOIN signatures s ON s.id = a.signature_id`

// Artifact returns name@version in any state.
func (s *Store) Artifact(ctx context.Context, name, version string) (*catalog.ArtifactRecord, error) {
	row := s.db.QueryRowContext(ctx, selectArtifacts+` WHERE a.name = ? AND a.version = ?`, name, version)
	r, err := scanArtifact(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("artifact %s@%s: %w", name, version, catalog.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read artifact %s@%s: %w", name, version, err)
	}
	return r, nil
}

// LoggedArtifactsByDigest returns the logged artifacts with digest, oldest
// first.
func (s *Store) LoggedArtifactsByDigest(ctx context.Context, digest string) ([]*catalog.ArtifactRecord, error) {
	rows, err := s.db.QueryContext(ctx, selectArtifacts+`
		WHERE a.digest = ? AND a.checkpoint IS NOT NULL ORDER BY a.log_index LIMIT 100`, digest)
	if err != nil {
		return nil, fmt.Errorf("read artifacts with digest %s: %w", digest, err)
	}
	defer rows.Close()
	var out []*catalog.ArtifactRecord
	for rows.Next() {
		r, err := scanArtifact(rows)
		if err != nil {
			return nil, fmt.Errorf("read artifacts with digest %s: %w", digest, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read artifacts with digest %s: %w", digest, err)
	}
	return out, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanArtifact(row scanner) (*catalog.ArtifactRecord, error) {
	var (
		r         catalog.ArtifactRecord
		a         = &r.Artifact
		created   string
		from      int64
		index     sql.NullInt64
		proofFlat []byte
		// The current re-signature, all NULL if there is none.
		sigID                          sql.NullInt64
		sigKeyID, sigActor, sigCreated sql.NullString
		sigFrom, sigIndex              sql.NullInt64
		sig                            catalog.Signature
		sigProof                       []byte
	)
	if err := row.Scan(&r.ID, &a.Name, &a.Version, &a.Digest, &a.Size, &a.Channel, &a.BuilderID, &a.SourceRepo, &a.SourceCommit,
		&created, &r.Envelope, &r.KeyID, &r.Entry.Leaf, &from, &index, &proofFlat, &r.Entry.Checkpoint,
		&sigID, &sig.Envelope, &sigKeyID, &sigActor, &sigCreated, &sig.Entry.Leaf, &sigFrom, &sigIndex, &sigProof, &sig.Entry.Checkpoint); err != nil {
		return nil, err
	}
	var err error
	if a.CreatedAt, err = time.Parse(time.RFC3339Nano, created); err != nil {
		return nil, fmt.Errorf("row %d: created_at %q: %w", r.ID, created, err)
	}
	if err := fillEntry(&r.Entry, from, index, proofFlat); err != nil {
		return nil, fmt.Errorf("row %d: %w", r.ID, err)
	}
	if !sigID.Valid {
		return &r, nil
	}
	sig.ID, sig.ArtifactID, sig.KeyID, sig.Actor = sigID.Int64, r.ID, sigKeyID.String, sigActor.String
	if err := finishSignature(&sig, sigCreated.String, sigFrom.Int64, sigIndex, sigProof); err != nil {
		return nil, err
	}
	r.Resigned = &sig
	return &r, nil
}

func finishSignature(sig *catalog.Signature, created string, from int64, index sql.NullInt64, proofFlat []byte) error {
	var err error
	if sig.CreatedAt, err = parseTime(created); err != nil {
		return fmt.Errorf("signature %d: %w", sig.ID, err)
	}
	if err := fillEntry(&sig.Entry, from, index, proofFlat); err != nil {
		return fmt.Errorf("signature %d: %w", sig.ID, err)
	}
	return nil
}

func fillEntry(e *catalog.Entry, from int64, index sql.NullInt64, proofFlat []byte) error {
	var idx *int64
	if index.Valid {
		idx = &index.Int64
	}
	return sqlquery.FillEntry(e, from, idx, proofFlat)
}

// InsertEvent stores e as pending.
func (s *Store) InsertEvent(ctx context.Context, e *catalog.Event) (int64, error) {
	var id int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`INSERT INTO events
			(type, actor, subject_digest, details, created_at, leaf, search_from) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			e.Type, e.Actor, e.SubjectDigest, e.Details, formatTime(e.CreatedAt), e.Entry.Leaf, int64(e.Entry.SearchFrom))
		if err != nil {
			return err
		}
		id, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("insert event %s: %w", e.Type, err)
	}
	return id, nil
}

// DeleteEvent removes a pending event.
func (s *Store) DeleteEvent(ctx context.Context, id int64) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`DELETE FROM events WHERE id = ? AND checkpoint IS NULL`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete event %d: %w", id, err)
	}
	return nil
}

func table(k catalog.Kind) (string, error) {
	switch k {
	case catalog.KindArtifact:
		return "artifacts", nil
	case catalog.KindEvent:
		return "events", nil
	case catalog.KindSignature:
		return "signatures", nil
	}
	return "", fmt.Errorf("unknown row kind %q", k)
}

// SetSequenced records the log index of a pending row.
func (s *Store) SetSequenced(ctx context.Context, ref catalog.Ref, index uint64) error {
	t, err := table(ref.Kind)
	if err != nil {
		return err
	}
	if index > math.MaxInt64 {
		return fmt.Errorf("log index %d out of range", index)
	}
	return s.update(ctx, ref, `UPDATE `+t+` SET log_index = ? WHERE id = ?`, int64(index), ref.ID)
}

// SetLogged records a row's evidence.
func (s *Store) SetLogged(ctx context.Context, ref catalog.Ref, index uint64, proof [][]byte, checkpoint []byte) error {
	t, err := table(ref.Kind)
	if err != nil {
		return err
	}
	if index > math.MaxInt64 {
		return fmt.Errorf("log index %d out of range", index)
	}
	if len(checkpoint) == 0 {
		return errors.New("set logged: empty checkpoint")
	}
	flat, err := sqlquery.JoinProof(proof)
	if err != nil {
		return fmt.Errorf("set logged: %w", err)
	}
	if ref.Kind != catalog.KindSignature {
		return s.update(ctx, ref, `UPDATE `+t+` SET log_index = ?, proof = ?, checkpoint = ? WHERE id = ?`, int64(index), flat, checkpoint, ref.ID)
	}
	// A logged signature is its artifact's current envelope, in the same
	// transaction: a signature is never current before it is logged, and
	// never logged without being current (unless a later one is).
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE signatures SET log_index = ?, proof = ?, checkpoint = ? WHERE id = ?`, int64(index), flat, checkpoint, ref.ID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("%d rows affected (%v)", n, err)
		}
		_, err = tx.Exec(`UPDATE artifacts SET signature_id = s.id, current_key_id = s.key_id
			FROM signatures s WHERE s.id = ? AND artifacts.id = s.artifact_id
			AND (artifacts.signature_id IS NULL OR artifacts.signature_id < s.id)`, ref.ID)
		return err
	})
	if err != nil {
		return fmt.Errorf("update %s %d: %w", ref.Kind, ref.ID, err)
	}
	return nil
}

func (s *Store) update(ctx context.Context, ref catalog.Ref, query string, args ...any) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(query, args...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("%d rows affected (%v)", n, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update %s %d: %w", ref.Kind, ref.ID, err)
	}
	return nil
}

// Pending returns every pending row, artifacts first, then signatures,
// then events, each in insertion order.
func (s *Store) Pending(ctx context.Context) ([]catalog.Pending, error) {
	var out []catalog.Pending
	for _, k := range []catalog.Kind{catalog.KindArtifact, catalog.KindSignature, catalog.KindEvent} {
		t, _ := table(k)
		rows, err := s.db.QueryContext(ctx, `SELECT id, leaf, search_from, log_index FROM `+t+` WHERE checkpoint IS NULL ORDER BY id`)
		if err != nil {
			return nil, fmt.Errorf("read pending %s rows: %w", k, err)
		}
		for rows.Next() {
			p := catalog.Pending{Ref: catalog.Ref{Kind: k}}
			var from int64
			var index sql.NullInt64
			if err := rows.Scan(&p.Ref.ID, &p.Entry.Leaf, &from, &index); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read pending %s rows: %w", k, err)
			}
			if err := fillEntry(&p.Entry, from, index, nil); err != nil {
				rows.Close()
				return nil, fmt.Errorf("pending %s %d: %w", k, p.Ref.ID, err)
			}
			out = append(out, p)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read pending %s rows: %w", k, err)
		}
	}
	return out, nil
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("created_at %q: %w", s, err)
	}
	return t, nil
}

func isUnique(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && (e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}
