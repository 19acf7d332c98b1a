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
