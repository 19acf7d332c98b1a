package storetest

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// loggedEvent is an event as the indexer stores it: logged at index.
func loggedEvent(digest string, index uint64) *catalog.Event {
	leaf := fmt.Appendf(nil, "event %d", index)
	return &catalog.Event{Type: "admission.decided", Actor: "spiffe://t/service/gatekeeper", SubjectDigest: digest,
		Details: []byte(`{}`), CreatedAt: created,
		Entry: catalog.Entry{Leaf: leaf, SearchFrom: index, Sequenced: true, Index: index, Proof: [][]byte{make([]byte, 32)}, Checkpoint: []byte("cp")}}
}

func indices(t *testing.T, s catalog.Store, digest string) []uint64 {
	t.Helper()
	entries, err := s.EntriesBySubject(t.Context(), digest, -1, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, e := range entries {
		out = append(out, e.Index)
	}
	return out
}

// indexEvents: IndexEvents stores events with their evidence and the
// indexed size in one go, never twice, never lowering the size, and
// refuses events that are not logged below the size it records.
func indexEvents(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	if n, err := s.IndexedSize(ctx); err != nil || n != 0 {
		t.Fatalf("new store: indexed size %d (%v), want 0", n, err)
	}
	if err := s.IndexEvents(ctx, []*catalog.Event{loggedEvent(d1, 0), loggedEvent(d1, 2)}, 3); err != nil {
		t.Fatal(err)
	}
	// Indexing the range again (a crash after the commit, before the
	// indexer learnt of it) stores nothing twice, and a smaller size does not lower it.
	if err := s.IndexEvents(ctx, []*catalog.Event{loggedEvent(d1, 2)}, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.IndexEvents(ctx, nil, 2); err != nil {
		t.Fatal(err)
	}
	if n, err := s.IndexedSize(ctx); err != nil || n != 3 {
		t.Errorf("indexed size %d (%v), want 3", n, err)
	}
	if diff := cmp.Diff([]uint64{0, 2}, indices(t, s, d1)); diff != "" {
		t.Errorf("stored events (-want +got):\n%s", diff)
	}
	pending := loggedEvent(d1, 3)
	pending.Entry.Checkpoint = nil
	for name, e := range map[string]*catalog.Event{"no checkpoint": pending, "index at the size": loggedEvent(d1, 5)} {
		if err := s.IndexEvents(ctx, []*catalog.Event{loggedEvent(d1, 4), e}, 5); err == nil {
			t.Errorf("%s: stored", name)
		}
	}
	// Nothing of a refused batch is stored.
	if n, err := s.IndexedSize(ctx); err != nil || n != 3 {
		t.Errorf("after refused batches: indexed size %d (%v), want 3", n, err)
	}
	if diff := cmp.Diff([]uint64{0, 2}, indices(t, s, d1)); diff != "" {
		t.Errorf("after refused batches: stored events (-want +got):\n%s", diff)
	}
}

// indexEventsLargeBatch: a batch larger than a back end's rows per
// statement stores every event once with its own leaf and proof, also when
// part of it was stored before.
func indexEventsLargeBatch(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	const n = 300
	var all []*catalog.Event
	for i := range uint64(n) {
		e := loggedEvent(d3, i)
		e.Entry.Proof = [][]byte{bytes.Repeat([]byte{byte(i)}, 32)}
		all = append(all, e)
	}
	if err := s.IndexEvents(ctx, all[100:250], 250); err != nil {
		t.Fatal(err)
	}
	if err := s.IndexEvents(ctx, all, n); err != nil {
		t.Fatal(err)
	}
	var got []catalog.Entry
	for after := int64(-1); ; {
		page, err := s.EntriesBySubject(ctx, d3, after, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		after = int64(page[len(page)-1].Index)
	}
	if len(got) != n {
		t.Fatalf("%d events stored, want %d", len(got), n)
	}
	for i, e := range got {
		if e.Index != uint64(i) || string(e.Leaf) != fmt.Sprintf("event %d", i) || len(e.Proof) != 1 || !bytes.Equal(e.Proof[0], all[i].Entry.Proof[0]) {
			t.Fatalf("event %d stored as index %d leaf %q proof %x", i, e.Index, e.Leaf, e.Proof)
		}
	}
	if size, err := s.IndexedSize(ctx); err != nil || size != n {
		t.Errorf("indexed size %d (%v), want %d", size, err, n)
	}
}

// indexEventsTwoStores: two stores (two catalog processes) indexing the
// same range at once store each event once.
func indexEventsTwoStores(t *testing.T, open Opener) {
	a, b := open(t), open(t)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []catalog.Store{a, b} {
		wg.Go(func() {
			for n := range uint64(20) {
				if err := s.IndexEvents(t.Context(), []*catalog.Event{loggedEvent(d2, n)}, n+1); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := indices(t, a, d2); len(got) != 20 {
		t.Errorf("%d events stored, want 20 (each once): %v", len(got), got)
	}
	if n, err := b.IndexedSize(t.Context()); err != nil || n != 20 {
		t.Errorf("indexed size %d (%v), want 20", n, err)
	}
}
