package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite"
)

// row is one line of `catalog dump-rows`: a logged row of the catalog's
// SQLite database with the exact log entry it claims, so that a verifier
// can match it against the log (custody backup verify).
type row struct {
	Table    string `json:"table"`
	ID       int64  `json:"id"`
	Name     string `json:"name,omitempty"`
	Version  string `json:"version,omitempty"`
	Digest   string `json:"digest,omitempty"`
	Type     string `json:"type,omitempty"`
	LogIndex *int64 `json:"log_index"`
	Leaf     []byte `json:"leaf"`
	Envelope []byte `json:"envelope,omitempty"`
}

// dumpRows is `catalog dump-rows --db FILE`: offline, it copies the SQLite
// database (and its WAL) to a temporary directory, so that the original,
// such as a backup set's, is never written, and prints every artifact and
// event row as a JSON line.
func dumpRows(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("catalog dump-rows", flag.ContinueOnError)
	db := fs.String("db", "", "the catalog.db to read (of a stopped site or a backup set)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *db == "" {
		return errors.New("--db is required")
	}
	tmp, err := os.MkdirTemp("", "catalog-dump-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(*db + suffix)
		if errors.Is(err, os.ErrNotExist) && suffix != "" {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tmp, "catalog.db"+suffix), b, 0o600); err != nil {
			return err
		}
	}
	conn, err := sql.Open("sqlite", "file:"+(&url.URL{Path: filepath.Join(tmp, "catalog.db")}).EscapedPath())
	if err != nil {
		return err
	}
	defer conn.Close()
	enc := json.NewEncoder(stdout)
	rows, err := conn.QueryContext(ctx, `SELECT id, name, version, digest, log_index, leaf, envelope FROM artifacts ORDER BY id`)
	if err != nil {
		return fmt.Errorf("read artifacts: %w", err)
	}
	for rows.Next() {
		r := row{Table: "artifacts"}
		if err := rows.Scan(&r.ID, &r.Name, &r.Version, &r.Digest, &r.LogIndex, &r.Leaf, &r.Envelope); err != nil {
			rows.Close()
			return fmt.Errorf("read artifacts: %w", err)
		}
		if err := enc.Encode(r); err != nil {
			rows.Close()
			return err
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("read artifacts: %w", err)
	}
	rows, err = conn.QueryContext(ctx, `SELECT id, type, log_index, leaf FROM events ORDER BY id`)
	if err != nil {
		return fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r := row{Table: "events"}
		if err := rows.Scan(&r.ID, &r.Type, &r.LogIndex, &r.Leaf); err != nil {
			return fmt.Errorf("read events: %w", err)
		}
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return rows.Err()
}
