// Package pgtest starts a private PostgreSQL server for tests, one per test
// binary, through scripts/postgres-up.sh, and hands each test its own
// database.
package pgtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// RequireEnv set to 1 makes a missing PostgreSQL a failure, not a skip
// (make test sets it).
const RequireEnv = "CUSTODY_TEST_REQUIRE_POSTGRES"

// ErrMissing means the PostgreSQL server binaries are not installed.
var ErrMissing = errors.New("PostgreSQL is not installed: run scripts/install-postgres.sh (make test-deps does)")

// Server is a running server started by scripts/postgres-up.sh.
type Server struct {
	// DSN is the connection string of the custody role's database; the
	// role may create databases.
	DSN string
	dir string
}

var (
	once    sync.Once
	shared  *Server
	started error
)

// Main runs the tests of a package and then stops the server, if one of
// them started it. Call it from TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	return code
}

// Shared returns the test binary's server, starting it on first use. It
// skips the test if PostgreSQL is missing and RequireEnv is unset.
func Shared(t testing.TB) *Server {
	t.Helper()
	once.Do(func() { shared, started = Start() })
	if errors.Is(started, ErrMissing) && os.Getenv(RequireEnv) != "1" {
		t.Skipf("%v (set %s=1 to fail instead)", started, RequireEnv)
	}
	if started != nil {
		t.Fatalf("start PostgreSQL: %v", started)
	}
	return shared
}

// Database creates an empty database on the shared server for this test
// and returns its connection string; it is dropped when the test ends.
func Database(t testing.TB) string {
	t.Helper()
	s := Shared(t)
	name := "test_" + randomHex(8)
	if err := s.admin(t.Context(), "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.admin(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(s.DSN, name)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// DSNFile writes dsn to a file of mode 0600 in a temporary directory of
// the test and returns its path, as the catalog's --postgres-dsn-file takes
// it.
func DSNFile(t testing.TB, dsn string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "postgres.dsn")
	if err := os.WriteFile(path, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (s *Server) admin(ctx context.Context, stmt string) error {
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, stmt)
	return err
}

func withDatabase(dsn, name string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", errors.New("postgres-up.sh wrote a DSN that is not a URL")
	}
	u.Path = "/" + name
	return u.String(), nil
}

// ScriptsDir is scripts/ in this repository.
func ScriptsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "..", "..", "scripts")
}

// Start starts a server in a new directory under the system's temporary
// directory (searchable by the user postgres, which runs the server when
// the tests run as root). It returns ErrMissing if PostgreSQL is not
// installed.
func Start() (*Server, error) {
	scripts := ScriptsDir()
	if out, err := exec.Command("bash", "-c", `source "$1/lib.sh" && postgres_bin`, "bash", scripts).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%w (%s)", ErrMissing, strings.TrimSpace(string(out)))
	}
	dir, err := os.MkdirTemp("", "custody-pg-")
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(scripts, "postgres-up.sh"), dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	s := &Server{dir: dir}
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("scripts/postgres-up.sh: %w\n%s", err, stderr.String())
	}
	var dsnFile string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CUSTODY_TEST_POSTGRES_DSN_FILE="); ok {
			dsnFile = v
		}
	}
	b, err := os.ReadFile(dsnFile)
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("scripts/postgres-up.sh printed no readable DSN file: %w", err)
	}
	s.DSN = strings.TrimSpace(string(b))
	return s, nil
}

// Stop stops the server and removes its directory.
func (s *Server) Stop() {
	exec.Command(filepath.Join(ScriptsDir(), "postgres-down.sh"), s.dir).Run()
	os.RemoveAll(s.dir)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
