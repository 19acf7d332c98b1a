package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// leaseMigration adds the lease rows: the address at which the holder of a
// lease (the log writer, 0047) serves, so that followers forward writes to
// it (0070). The row says where the holder was; the advisory lock says
// whether it still is.
var leaseMigration = migration{ddl: `CREATE TABLE leases (
	lease      TEXT        PRIMARY KEY,
	addr       TEXT        NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);`}

// maxLeaseAddr bounds an advertised address.
const maxLeaseAddr = 512

// Advertise records addr as the address of the holder of lease key. Call it
// only while holding the lease (TryLease).
func (s *Store) Advertise(ctx context.Context, key, addr string) error {
	if addr == "" || len(addr) > maxLeaseAddr {
		return fmt.Errorf("advertise lease %q: want an address of 1 to %d bytes", key, maxLeaseAddr)
	}
	_, err := s.db.Exec(ctx, `INSERT INTO leases (lease, addr) VALUES ($1, $2)
		ON CONFLICT (lease) DO UPDATE SET addr = EXCLUDED.addr, updated_at = now()`, key, addr)
	if err != nil {
		return fmt.Errorf("advertise lease %q: %w", key, err)
	}
	return nil
}

// ErrNoHolder means no catalog has advertised the lease yet.
var ErrNoHolder = errors.New("no holder of the lease has advertised an address yet")

// Advertised returns the address last advertised for lease key; it may
// be that of a holder that has died, until the next one advertises.
func (s *Store) Advertised(ctx context.Context, key string) (string, error) {
	var addr string
	err := s.db.QueryRow(ctx, `SELECT addr FROM leases WHERE lease = $1`, key).Scan(&addr)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNoHolder
	}
	if err != nil {
		return "", fmt.Errorf("read lease %q: %w", key, err)
	}
	return addr, nil
}

// WatchLease takes the lease key as TryLease does and, while it is held,
// checks its session every interval (each check bounded by half of it):
// lost receives an error, once, when the session is gone, and with it the
// lease, which another process may then take. The holder must stop using
// what the lease guards (0070).
func (s *Store) WatchLease(ctx context.Context, key string, interval time.Duration) (release func(), lost <-chan error, held bool, err error) {
	conn, err := s.locks.Acquire(ctx)
	if err != nil {
		return nil, nil, false, fmt.Errorf("lease %q: acquire a connection: %w", key, err)
	}
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, leaseSpace, key).Scan(&held); err != nil {
		destroy(conn)
		return nil, nil, false, fmt.Errorf("lease %q: %w", key, err)
	}
	if !held {
		conn.Release()
		return nil, nil, false, nil
	}
	lostc := make(chan error, 1)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			cctx, cancel := context.WithTimeout(context.Background(), interval/2)
			var still bool
			// The session's own lock list: the lease is held while this
			// session lives, and a broken session fails the query.
			err := conn.QueryRow(cctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
				AND classid = $1::int::oid AND objid = hashtext($2)::oid AND granted)`, leaseSpace, key).Scan(&still)
			cancel()
			if err == nil && !still {
				err = errors.New("the session no longer holds it")
			}
			if err != nil {
				lostc <- fmt.Errorf("lease %q lost: %w", key, err)
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			<-done
			unlease(conn, key)
		})
	}, lostc, true, nil
}
