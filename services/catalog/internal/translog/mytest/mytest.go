// Package mytest starts private MariaDB servers for tests of the catalog's
// log on Tessera's MySQL driver.
package mytest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// RequireEnv, set to 1, makes the MySQL tests fail instead of skip
// when MariaDB is not installed (make test sets it).
const RequireEnv = "CUSTODY_TEST_REQUIRE_MYSQL"

// Database starts a private MariaDB through scripts/mariadb-up.sh for the
// test (stopped at its end), and returns the DSN of a fresh database in it.
// Without MariaDB installed it skips the test, or fails it with RequireEnv
// set to 1.
func Database(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("mariadb-install-db"); err != nil {
		if os.Getenv(RequireEnv) != "1" {
			t.Skipf("MariaDB is not installed: run scripts/install-mariadb.sh (make test-deps does); set %s=1 to fail instead", RequireEnv)
		}
		t.Fatal("MariaDB is not installed: run scripts/install-mariadb.sh (make test-deps does)")
	}
	_, file, _, _ := runtime.Caller(0)
	scripts := filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "..", "scripts")
	dir, err := os.MkdirTemp("", "custody-my-")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(scripts, "mariadb-up.sh"), dir).Output()
	t.Cleanup(func() {
		if b, err := exec.Command(filepath.Join(scripts, "mariadb-down.sh"), dir).CombinedOutput(); err != nil {
			t.Logf("mariadb-down: %v\n%s", err, b)
		}
		os.RemoveAll(dir)
	})
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("mariadb-up.sh: %v\n%s", err, stderr)
	}
	var dsnFile string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CUSTODY_TEST_MYSQL_DSN_FILE="); ok {
			dsnFile = v
		}
	}
	b, err := os.ReadFile(dsnFile)
	if err != nil {
		t.Fatalf("mariadb-up.sh printed no DSN file: %v", err)
	}
	cfg, err := mysql.ParseDSN(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal("mariadb-up.sh wrote a DSN that does not parse")
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	cfg.DBName = "log_" + hex.EncodeToString(rnd[:])
	admin := cfg.Clone()
	admin.DBName = ""
	db, err := sql.Open("mysql", admin.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(t.Context(), "CREATE DATABASE "+cfg.DBName); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return cfg.FormatDSN()
}
