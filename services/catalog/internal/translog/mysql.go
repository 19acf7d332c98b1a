package translog

import (
	"context"
	"database/sql"
	_ "embed"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/transparency-dev/tessera"
	tmysql "github.com/transparency-dev/tessera/storage/mysql"
)

// mysqlSchema is Tessera's MySQL schema (storage/mysql/schema.sql of the
// Tessera version in go.mod), applied idempotently by OpenMySQL.
//
//go:embed mysql_schema.sql
var mysqlSchema string

// MinMySQLCheckpointInterval is the least CheckpointInterval Tessera's
// MySQL driver accepts.
const MinMySQLCheckpointInterval = time.Second

// OpenMySQL connects to the MySQL or MariaDB database that dsn names
// (go-sql-driver/mysql form: user:password@tcp(host:port)/db), creates
// Tessera's tables in it if they are missing, and returns Tessera's MySQL
// driver on it for Config.Driver, with the function that closes the
// connection pool (after the Log is closed). Errors never quote dsn, which
// holds a password.
func OpenMySQL(ctx context.Context, dsn string) (tessera.Driver, func() error, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("MySQL DSN: not of the form user:password@tcp(host:port)/database")
	}
	if cfg.DBName == "" {
		return nil, nil, fmt.Errorf("MySQL DSN names no database: end it with /<database>")
	}
	// The schema is several statements: apply it on a connection of its
	// own that allows that; the log's pool does not.
	scfg := cfg.Clone()
	scfg.MultiStatements = true
	sdb, err := sql.Open("mysql", scfg.FormatDSN())
	if err != nil {
		return nil, nil, fmt.Errorf("open MySQL database %s at %s: %w", cfg.DBName, cfg.Addr, err)
	}
	_, err = sdb.ExecContext(ctx, mysqlSchema)
	sdb.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: create the log's tables in MySQL database %s at %s: %v", ErrUnavailable, cfg.DBName, cfg.Addr, err)
	}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, nil, fmt.Errorf("open MySQL database %s at %s: %w", cfg.DBName, cfg.Addr, err)
	}
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(8)
	d, err := tmysql.New(ctx, db)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("%w: Tessera MySQL driver on %s at %s: %v", ErrUnavailable, cfg.DBName, cfg.Addr, err)
	}
	return d, db.Close, nil
}

// awaitFirstCheckpoint waits, at most timeout, until reader has a
// checkpoint: a driver that publishes it in the background (MySQL) has none
// for a moment after a new log is created. Open then verifies it.
func awaitFirstCheckpoint(ctx context.Context, reader tessera.LogReader, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := reader.ReadCheckpoint(ctx); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}
