package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migration is one step of the schema: DDL, then optionally Go code that
// fills new tables or columns from existing rows, in the same transaction.
type migration struct {
	ddl  string
	fill func(ctx context.Context, tx pgx.Tx) error
}

// migrations are applied in order, each in the transaction that records it
// in schema_migrations. Append, never edit. The schema is SQLite's
// (store/sqlite) in PostgreSQL's types: BIGINT identity IDs, BYTEA,
// TIMESTAMPTZ (kept to the microsecond) and JSONB.
var migrations = []migration{
	{ddl: `CREATE TABLE artifacts (
		id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		name          TEXT        NOT NULL,
		version       TEXT        NOT NULL,
		digest        TEXT        NOT NULL,
		size          BIGINT      NOT NULL,
		channel       TEXT        NOT NULL,
		builder_id    TEXT        NOT NULL,
		source_repo   TEXT        NOT NULL,
		source_commit TEXT        NOT NULL,
		created_at    TIMESTAMPTZ NOT NULL,
		envelope      BYTEA       NOT NULL,
		key_id        TEXT        NOT NULL, -- of envelope's (first) signature
		current_key_id TEXT       NOT NULL, -- of the current envelope's signature
		signature_id  BIGINT,               -- the current re-signature; NULL: envelope is current
		leaf          BYTEA       NOT NULL, -- the exact log entry bytes
		search_from   BIGINT      NOT NULL, -- log size before the first append
		log_index     BIGINT,               -- NULL until the log assigns one
		proof         BYTEA,                -- inclusion proof, 32-byte hashes concatenated
		checkpoint    BYTEA,                -- NULL while pending
		UNIQUE (name, version),
		UNIQUE (log_index)
	);
	CREATE INDEX artifacts_by_digest ON artifacts (digest, id);
	CREATE INDEX artifacts_pending ON artifacts (id) WHERE checkpoint IS NULL;
	CREATE INDEX artifacts_by_current_key ON artifacts (current_key_id, id);
	CREATE TABLE events (
		id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		type           TEXT        NOT NULL,
		actor          TEXT        NOT NULL,
		subject_digest TEXT        NOT NULL,
		details        BYTEA,
		created_at     TIMESTAMPTZ NOT NULL,
		leaf           BYTEA       NOT NULL,
		search_from    BIGINT      NOT NULL,
		log_index      BIGINT,
		proof          BYTEA,
		checkpoint     BYTEA,
		UNIQUE (log_index)
	);
	CREATE INDEX events_by_subject ON events (subject_digest, id);
	CREATE INDEX events_pending ON events (id) WHERE checkpoint IS NULL;
	CREATE TABLE signatures (
		id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		artifact_id BIGINT      NOT NULL REFERENCES artifacts (id),
		envelope    BYTEA       NOT NULL,
		key_id      TEXT        NOT NULL,
		actor       TEXT        NOT NULL,
		created_at  TIMESTAMPTZ NOT NULL,
		leaf        BYTEA       NOT NULL,
		search_from BIGINT      NOT NULL,
		log_index   BIGINT,
		proof       BYTEA,
		checkpoint  BYTEA,
		UNIQUE (log_index)
	);
	ALTER TABLE artifacts ADD FOREIGN KEY (signature_id) REFERENCES signatures (id);
	CREATE INDEX signatures_by_artifact ON signatures (artifact_id, id);
	-- At most one pending signature per artifact: it is finished before
	-- another is recorded, so the history is in log order.
	CREATE UNIQUE INDEX signatures_pending ON signatures (artifact_id) WHERE checkpoint IS NULL;
	-- Search: an index per filter, in ID order for paging.
	CREATE INDEX artifacts_by_name ON artifacts (name, id);
	CREATE INDEX artifacts_by_builder ON artifacts (builder_id, id);
	CREATE INDEX artifacts_by_source_repo ON artifacts (source_repo, id);
	CREATE INDEX artifacts_by_source_commit ON artifacts (source_commit, id);
	CREATE INDEX artifacts_by_channel ON artifacts (channel, id);
	CREATE TABLE deployments (
		id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		artifact_id BIGINT      NOT NULL REFERENCES artifacts (id),
		environment TEXT        NOT NULL,
		actor       TEXT        NOT NULL,
		deployed_at TIMESTAMPTZ NOT NULL
	);
	CREATE INDEX deployments_by_environment ON deployments (environment, artifact_id);
	CREATE INDEX deployments_by_artifact ON deployments (artifact_id, id);`},
	// Version 2: the lineage graph (SQLite's version 4).
	lineageMigration,
	indexMigration,
	leaseMigration,
	sbomMigration,
	advisoryMigration,
	componentPackageMigration,
}

// migrateLock is the key of the advisory lock that serializes migrations
// between catalog processes starting at once.
const migrateLock = 0x637573746f6479 // "custody"

// migrate brings the schema up to date in one transaction, under an
// advisory lock so that catalogs starting together migrate once, and
// refuses a database migrated by a newer catalog.
func migrate(ctx context.Context, db *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLock)); err != nil {
			return fmt.Errorf("lock schema for migration: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER     PRIMARY KEY,
			applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var version int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM schema_migrations`).Scan(&version); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if version > len(migrations) {
			return fmt.Errorf("schema version %d is newer than this catalog knows (%d): run a newer catalog", version, len(migrations))
		}
		for i := version; i < len(migrations); i++ {
			if _, err := tx.Exec(ctx, migrations[i].ddl); err != nil {
				return fmt.Errorf("migrate schema to version %d: %w", i+1, err)
			}
			if f := migrations[i].fill; f != nil {
				if err := f(ctx, tx); err != nil {
					return fmt.Errorf("migrate schema to version %d: fill new tables: %w", i+1, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, i+1); err != nil {
				return fmt.Errorf("record schema version %d: %w", i+1, err)
			}
		}
		return nil
	})
}
