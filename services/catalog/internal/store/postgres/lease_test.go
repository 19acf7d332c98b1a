package postgres_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custody-dev/custody/services/catalog/internal/store/postgres"
	"github.com/custody-dev/custody/services/catalog/internal/store/postgres/pgtest"
)

// TestWatchLeaseReportsLoss: a watched lease says nothing while its
// session lives; when PostgreSQL ends the session (here terminated, as a
// restart or a cut connection would), lost says so, and another store
// takes the lease.
func TestWatchLeaseReportsLoss(t *testing.T) {
	dsn := pgtest.Database(t)
	a, b := open(t, dsn), open(t, dsn)
	release, lost, held, err := a.WatchLease(t.Context(), "log-writer", 100*time.Millisecond)
	if err != nil || !held {
		t.Fatalf("watched lease: held %v, %v", held, err)
	}
	defer release()
	select {
	case err := <-lost:
		t.Fatalf("lease reported lost while held: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if _, _, held, err := b.WatchLease(t.Context(), "log-writer", time.Second); err != nil || held {
		t.Fatalf("second lease while held: held %v, %v", held, err)
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	// End the session that holds the lease.
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND classid = x'6c656173'::int::oid AND granted`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the lease's session: %d sessions, %v", n, err)
	}
	select {
	case err := <-lost:
		t.Logf("reported: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("lease lost without a report")
	}
	r2, _, held, err := b.WatchLease(t.Context(), "log-writer", time.Second)
	if err != nil || !held {
		t.Fatalf("lease after the holder's session ended: held %v, %v", held, err)
	}
	r2()
}

// TestAdvertise: the address of the lease's holder, the newest one, and
// bounded.
func TestAdvertise(t *testing.T) {
	dsn := pgtest.Database(t)
	a, b := open(t, dsn), open(t, dsn)
	if _, err := b.Advertised(t.Context(), "log-writer"); !errors.Is(err, postgres.ErrNoHolder) {
		t.Fatalf("before any advertisement: %v, want ErrNoHolder", err)
	}
	for _, addr := range []string{"127.0.0.1:1", "127.0.0.1:2"} {
		if err := a.Advertise(t.Context(), "log-writer", addr); err != nil {
			t.Fatal(err)
		}
		if got, err := b.Advertised(t.Context(), "log-writer"); err != nil || got != addr {
			t.Fatalf("advertised %q, read %q, %v", addr, got, err)
		}
	}
	if err := a.Advertise(t.Context(), "log-writer", string(make([]byte, 513))); err == nil {
		t.Error("an address of 513 bytes was advertised")
	}
}
