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
