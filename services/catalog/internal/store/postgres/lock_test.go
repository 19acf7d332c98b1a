package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/custody-dev/custody/services/catalog/internal/store/postgres/pgtest"
)

// TestLockAcrossStores: a key locked through one store (one catalog
// process) is held against another until released; other keys are not
// held; a wait is bounded by its context and leaves nothing held.
func TestLockAcrossStores(t *testing.T) {
	dsn := pgtest.Database(t)
	a, b := open(t, dsn), open(t, dsn)
	unlock, err := a.Lock(t.Context(), "app@1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	if _, err := b.Lock(short(), "app@1.0.0"); err == nil {
		t.Fatal("another store took a held lock")
	}
	other, err := b.Lock(short(), "app@1.0.1")
	if err != nil {
		t.Fatalf("another key: %v", err)
	}
	other()
	unlock()
	again, err := b.Lock(short(), "app@1.0.0")
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	again()
	// Waiting for a lock is bounded by the caller's context, and a
	// cancelled wait leaves nothing held.
	unlock, err = a.Lock(t.Context(), "app@3.0.0")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := b.Lock(short(), "app@3.0.0"); err == nil {
			t.Fatal("took a held lock")
		}
	}
	unlock()
	if u, err := b.Lock(short(), "app@3.0.0"); err != nil {
		t.Fatalf("after cancelled waits: %v", err)
	} else {
		u()
	}
}

// TestLeaseIsHeldOnce: one store (one catalog process) holds a lease; the
// others are told so at once, without waiting; released, it is free.
func TestLeaseIsHeldOnce(t *testing.T) {
	dsn := pgtest.Database(t)
	a, b := open(t, dsn), open(t, dsn)
	release, held, err := a.TryLease(t.Context(), "log-writer")
	if err != nil || !held {
		t.Fatalf("first lease: held %v, %v", held, err)
	}
	if _, held, err := b.TryLease(t.Context(), "log-writer"); err != nil || held {
		t.Fatalf("second lease while held: held %v, %v", held, err)
	}
	// A name@version lock of the same name is another lock.
	if u, err := b.Lock(t.Context(), "log-writer"); err != nil {
		t.Fatalf("lock beside the lease: %v", err)
	} else {
		u()
	}
	release()
	r2, held, err := b.TryLease(t.Context(), "log-writer")
	if err != nil || !held {
		t.Fatalf("lease after release: held %v, %v", held, err)
	}
	r2()
}
