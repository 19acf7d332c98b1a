package postgres_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/custody-dev/custody/services/catalog/internal/store/postgres"
	"github.com/custody-dev/custody/services/catalog/internal/store/postgres/pgtest"
	"github.com/custody-dev/custody/services/catalog/internal/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func open(t *testing.T, dsn string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance runs the metadata store suite on a real PostgreSQL; "two
// stores" are two connection pools on one database, as two catalog
// processes have.
func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Options{NewDatabase: func(t *testing.T) storetest.Opener {
		dsn := pgtest.Database(t)
		return func(t *testing.T) storetest.Store { return open(t, dsn) }
	}})
}

// TestMigrations checks that catalogs starting at once migrate once, that
// the migrations table records every version, and that a database
// migrated by a newer catalog is refused.
func TestMigrations(t *testing.T) {
	dsn := pgtest.Database(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			s, err := postgres.Open(t.Context(), dsn)
			if err != nil {
				errs <- err
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent start: %v", err)
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n, max int
	if err := conn.QueryRow(t.Context(), `SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if n != max || n < 1 {
		t.Errorf("schema_migrations: %d rows up to version %d; want one row per version", n, max)
	}
	if _, err := conn.Exec(t.Context(), `INSERT INTO schema_migrations (version) VALUES ($1)`, max+1); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.Open(t.Context(), dsn); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("opening a newer schema: got %v, want an error saying it is newer", err)
	}
}

// TestOpenErrors checks that connection failures say where and never show
// the password.
func TestOpenErrors(t *testing.T) {
	const password = "s3cret-password-value"
	for _, dsn := range []string{
		"postgres://custody:" + password + "@127.0.0.1:1/custody?sslmode=disable&connect_timeout=2",
		"postgres://custody:" + password + "@[::1",
		"host=127.0.0.1 port=notaport password=" + password,
	} {
		_, err := postgres.Open(t.Context(), dsn)
		if err == nil {
			t.Errorf("Open(%q): want an error", dsn)
			continue
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("Open error shows the password: %v", err)
		}
	}
}
