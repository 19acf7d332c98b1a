package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

var _ catalog.Locker = (*Store)(nil)

// lockSpace is the first key of the catalog's two-key advisory locks
// ("name" in ASCII), so that they do not collide with others' locks.
const lockSpace int32 = 0x6e616d65

// maxLockConns bounds the connections that hold advisory locks: each
// held lock keeps one, so they come from a pool of their own and never
// starve the store's queries.
const maxLockConns = 8

// Lock holds key in every process sharing the database, with a session
// advisory lock on a connection of its own, until unlock. Keys hash to 32
// bits (hashtext): two keys may share a lock, which only serializes them.
// A process that dies releases its locks with its connections.
func (s *Store) Lock(ctx context.Context, key string) (unlock func(), err error) {
	conn, err := s.locks.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock %q: acquire a connection: %w", key, err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1, hashtext($2))`, lockSpace, key); err != nil {
		// It is unknown whether the lock was taken: drop the session.
		destroy(conn)
		return nil, fmt.Errorf("lock %q: %w", key, err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var released bool
		if err := conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1, hashtext($2))`, lockSpace, key).Scan(&released); err != nil || !released {
			destroy(conn)
			return
		}
		conn.Release()
	}, nil
}

// destroy closes a pooled connection (ending its session and its locks)
// and hands it back, so the pool forgets it.
func destroy(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn.Conn().Close(ctx)
	conn.Release()
}

// leaseSpace is the first key of the catalog's lease locks ("leas"): apart
// from lockSpace, so a lease never collides with a name@version lock.
const leaseSpace int32 = 0x6c656173

// TryLease takes the lease key, held by at most one session of the
// database at a time, without waiting: held is false if another session
// (another catalog process) has it. The lease lasts until release, or
// until this process's connection ends (it dies, or the database goes
// away), when PostgreSQL drops it.
func (s *Store) TryLease(ctx context.Context, key string) (release func(), held bool, err error) {
	conn, err := s.locks.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("lease %q: acquire a connection: %w", key, err)
	}
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, leaseSpace, key).Scan(&held); err != nil {
		destroy(conn)
		return nil, false, fmt.Errorf("lease %q: %w", key, err)
	}
	if !held {
		conn.Release()
		return nil, false, nil
	}
	return func() { unlease(conn, key) }, true, nil
}

// unlease releases the lease key held by conn's session and closes it:
// the unlock first, since the server ends a closed session (and drops its
// locks) only some time after the client has gone, so another process
// trying the lease at once would find it still held.
func unlease(conn *pgxpool.Conn, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = conn.Exec(ctx, `SELECT pg_advisory_unlock($1, hashtext($2))`, leaseSpace, key)
	destroy(conn)
}
