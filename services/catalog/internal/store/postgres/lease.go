package postgres

import (
	"context"
	"errors"
	"fmt"

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
