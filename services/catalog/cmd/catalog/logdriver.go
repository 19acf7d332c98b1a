package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/custody-dev/custody/services/catalog/internal/translog"
)

// validateLogDriver checks the log-driver flags: --log-mysql-dsn-file must
// hold one DSN line, and the HTTPS tiles, served from the POSIX directory,
// are not available with it yet.
func (c *config) validateLogDriver() error {
	if c.LogMySQLDSNFile == "" {
		return nil
	}
	var errs []error
	if _, err := c.mysqlDSN(); err != nil {
		errs = append(errs, err)
	}
	if c.HTTPSListen != "" {
		errs = append(errs, errors.New("--https-listen serves the tiles of the POSIX log in --data-dir; with --log-mysql-dsn-file there are none: drop one of them"))
	}
	return errors.Join(errs...)
}

// mysqlDSN reads the DSN; errors never quote the file's contents, which
// hold a password.
func (c *config) mysqlDSN() (string, error) {
	b, err := os.ReadFile(c.LogMySQLDSNFile)
	if err != nil {
		return "", fmt.Errorf("--log-mysql-dsn-file: %w", err)
	}
	dsn := strings.TrimSpace(string(b))
	if dsn == "" || strings.ContainsAny(dsn, "\n\r") {
		return "", fmt.Errorf("--log-mysql-dsn-file %s: want one line with a DSN (user:password@tcp(host:port)/db)", c.LogMySQLDSNFile)
	}
	return dsn, nil
}

// logConfig returns the log's storage configuration, the one switch over
// Tessera drivers: MySQL with --log-mysql-dsn-file (its checkpoint
// interval at the driver's minimum), else POSIX in --data-dir/log. The
// function returned closes what it opened, after the log is closed.
func (c *config) logConfig(ctx context.Context) (translog.Config, func(), error) {
	if c.LogMySQLDSNFile == "" {
		return translog.Config{Dir: filepath.Join(c.DataDir, "log")}, func() {}, nil
	}
	dsn, err := c.mysqlDSN()
	if err != nil {
		return translog.Config{}, nil, err
	}
	d, closeDB, err := translog.OpenMySQL(ctx, dsn)
	if err != nil {
		return translog.Config{}, nil, fmt.Errorf("--log-mysql-dsn-file: %w", err)
	}
	return translog.Config{Driver: d, CheckpointInterval: translog.MinMySQLCheckpointInterval}, func() { _ = closeDB() }, nil
}
