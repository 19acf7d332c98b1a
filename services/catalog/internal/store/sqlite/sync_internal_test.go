package sqlite

import (
	"database/sql"
	"path/filepath"
	"testing"
)

// TestDerivedWritesSkipOnlyTheirOwnFsync checks that a group of derived
// writes (rows rebuilt from the log) commits with synchronous=NORMAL, and
// that every other write, also one after a derived write on the same
// pooled connection, commits with FULL.
func TestDerivedWritesSkipOnlyTheirOwnFsync(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.db.SetMaxOpenConns(1) // every write reuses the connection of the last
	level := func(got *int) func(tx *sql.Tx) error {
		return func(tx *sql.Tx) error { return tx.QueryRow("PRAGMA synchronous").Scan(got) }
	}
	const normal, full = 1, 2
	for i, step := range []struct {
		derived bool
		want    int
	}{{true, normal}, {false, full}, {true, normal}, {true, normal}, {false, full}} {
		var got int
		write := s.write
		if step.derived {
			write = s.writeDerived
		}
		if err := write(t.Context(), level(&got)); err != nil {
			t.Fatal(err)
		}
		if got != step.want {
			t.Errorf("write %d (derived %v): synchronous = %d, want %d", i, step.derived, got, step.want)
		}
	}
}
