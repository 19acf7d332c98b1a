// Package postgres stores the catalog in PostgreSQL through pgx: the
// metadata back end that several catalog processes share.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlquery"
)

// Store is a catalog.Store in a PostgreSQL database. Every write is one
// transaction, committed before the method returns; uniqueness is enforced
// by the database's constraints, so it holds between every process that
// shares the database.
type Store struct {
	db *pgxpool.Pool
	// locks holds the connections of advisory locks (Lock).
	locks *pgxpool.Pool
}

var _ catalog.Store = (*Store)(nil)

// defaultMaxConns is the pool size unless the connection string sets
// pool_max_conns: enough for the catalog's concurrent records, well under
// PostgreSQL's default max_connections of 100 for two or three catalogs.
const defaultMaxConns = 16

// Open connects to the database that dsn (a libpq connection string or
// URL; the password belongs in it or in a .pgpass file, never on a command
// line) names, checks that it answers, and brings its schema up to date.
// Errors never contain the password.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors can quote the string: say only what failed.
		return nil, errors.New("parse PostgreSQL connection string: want a URL (postgres://user:password@host:port/db?sslmode=...) or key=value pairs")
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	// The catalog's queries are short index lookups; JIT compiling one
	// whose estimate is inflated (a recursive walk) costs hundreds of
	// milliseconds for sub-millisecond work (decision 0065). A connection
	// string that sets jit keeps its choice.
	if _, ok := cfg.ConnConfig.RuntimeParams["jit"]; !ok {
		cfg.ConnConfig.RuntimeParams["jit"] = "off"
	}
	where := fmt.Sprintf("PostgreSQL %s@%s:%d/%s", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", where, err)
	}
	if err := db.Ping(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s: %w", where, err)
	}
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	lcfg := cfg.Copy()
	lcfg.MaxConns = maxLockConns
	locks, err := pgxpool.NewWithConfig(ctx, lcfg)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s for locks: %w", where, err)
	}
	return &Store{db: db, locks: locks}, nil
}

// Close closes the pool. Calls after Close fail.
func (s *Store) Close() error {
	s.locks.Close()
	s.db.Close()
	return nil
}

// InsertArtifact stores r as pending, with its lineage edges.
func (s *Store) InsertArtifact(ctx context.Context, r *catalog.ArtifactRecord) (int64, error) {
	a := r.Artifact
	var id int64
	// The artifact and its lineage edges are one transaction: an artifact
	// is never stored without its edges.
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO artifacts
			(name, version, digest, size, channel, builder_id, source_repo, source_commit, created_at, envelope, key_id, current_key_id, leaf, search_from)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13) RETURNING id`,
			a.Name, a.Version, a.Digest, a.Size, a.Channel, a.BuilderID, a.SourceRepo, a.SourceCommit,
			a.CreatedAt.UTC(), r.Envelope, r.KeyID, r.Entry.Leaf, int64(r.Entry.SearchFrom)).Scan(&id); err != nil {
			return err
		}
		return insertEdges(ctx, tx, id, a.Digest, r.Dependencies)
	})
	if err != nil {
		if isCode(err, uniqueViolation) {
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
	rows, err := s.db.Query(ctx, selectArtifacts+` WHERE a.name = $1 AND a.version = $2`, name, version)
	if err != nil {
		return nil, fmt.Errorf("read artifact %s@%s: %w", name, version, err)
	}
	recs, err := collectArtifacts(rows)
	if err != nil {
		return nil, fmt.Errorf("read artifact %s@%s: %w", name, version, err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("artifact %s@%s: %w", name, version, catalog.ErrNotFound)
	}
	return recs[0], nil
}

// LoggedArtifactsByDigest returns the logged artifacts with digest, oldest
// first.
func (s *Store) LoggedArtifactsByDigest(ctx context.Context, digest string) ([]*catalog.ArtifactRecord, error) {
	rows, err := s.db.Query(ctx, selectArtifacts+`
		WHERE a.digest = $1 AND a.checkpoint IS NOT NULL ORDER BY a.log_index LIMIT 100`, digest)
	if err != nil {
		return nil, fmt.Errorf("read artifacts with digest %s: %w", digest, err)
	}
	recs, err := collectArtifacts(rows)
	if err != nil {
		return nil, fmt.Errorf("read artifacts with digest %s: %w", digest, err)
	}
	return recs, nil
}

func collectArtifacts(rows pgx.Rows) ([]*catalog.ArtifactRecord, error) {
	defer rows.Close()
	var out []*catalog.ArtifactRecord
	for rows.Next() {
		r, err := scanArtifact(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func scanArtifact(row pgx.Row) (*catalog.ArtifactRecord, error) {
	var (
		r         catalog.ArtifactRecord
		a         = &r.Artifact
		from      int64
		index     *int64
		proofFlat []byte
		// The current re-signature, all NULL if there is none.
		sigID, sigFrom, sigIndex *int64
		sigKeyID, sigActor       *string
		sigCreated               *time.Time
		sig                      catalog.Signature
		sigProof                 []byte
	)
	if err := row.Scan(&r.ID, &a.Name, &a.Version, &a.Digest, &a.Size, &a.Channel, &a.BuilderID, &a.SourceRepo, &a.SourceCommit,
		&a.CreatedAt, &r.Envelope, &r.KeyID, &r.Entry.Leaf, &from, &index, &proofFlat, &r.Entry.Checkpoint,
		&sigID, &sig.Envelope, &sigKeyID, &sigActor, &sigCreated, &sig.Entry.Leaf, &sigFrom, &sigIndex, &sigProof, &sig.Entry.Checkpoint); err != nil {
		return nil, err
	}
	a.CreatedAt = a.CreatedAt.UTC()
	if err := sqlquery.FillEntry(&r.Entry, from, index, proofFlat); err != nil {
		return nil, fmt.Errorf("row %d: %w", r.ID, err)
	}
	if sigID == nil {
		return &r, nil
	}
	if sigKeyID == nil || sigActor == nil || sigCreated == nil || sigFrom == nil {
		return nil, fmt.Errorf("row %d: signature %d has NULL columns", r.ID, *sigID)
	}
	sig.ID, sig.ArtifactID, sig.KeyID, sig.Actor, sig.CreatedAt = *sigID, r.ID, *sigKeyID, *sigActor, sigCreated.UTC()
	if err := sqlquery.FillEntry(&sig.Entry, *sigFrom, sigIndex, sigProof); err != nil {
		return nil, fmt.Errorf("signature %d: %w", sig.ID, err)
	}
	r.Resigned = &sig
	return &r, nil
}

// InsertEvent stores e as pending.
func (s *Store) InsertEvent(ctx context.Context, e *catalog.Event) (int64, error) {
	var id int64
	err := s.db.QueryRow(ctx, `INSERT INTO events (type, actor, subject_digest, details, created_at, leaf, search_from)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
		e.Type, e.Actor, e.SubjectDigest, e.Details, e.CreatedAt.UTC(), e.Entry.Leaf, int64(e.Entry.SearchFrom)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("insert event %s: %w", e.Type, err)
	}
	return id, nil
}

// DeleteEvent removes a pending event.
func (s *Store) DeleteEvent(ctx context.Context, id int64) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM events WHERE id = $1 AND checkpoint IS NULL`, id); err != nil {
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
	return s.update(ctx, ref, `UPDATE `+t+` SET log_index = $1 WHERE id = $2`, int64(index), ref.ID)
}

// SetLogged records a row's evidence; a signature becomes its artifact's
// current envelope in the same transaction.
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
		return s.update(ctx, ref, `UPDATE `+t+` SET log_index = $1, proof = $2, checkpoint = $3 WHERE id = $4`, int64(index), flat, checkpoint, ref.ID)
	}
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE signatures SET log_index = $1, proof = $2, checkpoint = $3 WHERE id = $4`, int64(index), flat, checkpoint, ref.ID)
		if err != nil {
			return err
		}
		if n := tag.RowsAffected(); n != 1 {
			return fmt.Errorf("%d rows affected", n)
		}
		_, err = tx.Exec(ctx, `UPDATE artifacts a SET signature_id = s.id, current_key_id = s.key_id
			FROM signatures s WHERE s.id = $1 AND a.id = s.artifact_id
			AND (a.signature_id IS NULL OR a.signature_id < s.id)`, ref.ID)
		return err
	})
	if err != nil {
		return fmt.Errorf("update %s %d: %w", ref.Kind, ref.ID, err)
	}
	return nil
}

func (s *Store) update(ctx context.Context, ref catalog.Ref, query string, args ...any) error {
	tag, err := s.db.Exec(ctx, query, args...)
	if err == nil && tag.RowsAffected() != 1 {
		err = fmt.Errorf("%d rows affected", tag.RowsAffected())
	}
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
		rows, err := s.db.Query(ctx, `SELECT id, leaf, search_from, log_index FROM `+t+` WHERE checkpoint IS NULL ORDER BY id`)
		if err != nil {
			return nil, fmt.Errorf("read pending %s rows: %w", k, err)
		}
		for rows.Next() {
			p := catalog.Pending{Ref: catalog.Ref{Kind: k}}
			var (
				from  int64
				index *int64
			)
			if err := rows.Scan(&p.Ref.ID, &p.Entry.Leaf, &from, &index); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read pending %s rows: %w", k, err)
			}
			if err := sqlquery.FillEntry(&p.Entry, from, index, nil); err != nil {
				rows.Close()
				return nil, fmt.Errorf("pending %s %d: %w", k, p.Ref.ID, err)
			}
			out = append(out, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read pending %s rows: %w", k, err)
		}
	}
	return out, nil
}

// PostgreSQL error codes (SQLSTATE).
const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
)

func isCode(err error, code string) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == code
}
