package sqlite

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// TestIndexEventsStoresDetailsOnce checks that IndexEvents leaves the
// details column NULL (the leaf holds them) and stores every row of a
// batch of full chunks and a partial one, each with its own leaf.
func TestIndexEventsStoresDetailsOnce(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	n := 2*indexRowsPerInsert + 3
	var events []*catalog.Event
	for i := range uint64(n) {
		events = append(events, &catalog.Event{Type: "admission.decided", Actor: "spiffe://t/service/gatekeeper",
			Details: []byte(`{"n":1}`), CreatedAt: time.Unix(0, 0), Entry: catalog.Entry{Leaf: fmt.Appendf(nil, "leaf %d", i),
				SearchFrom: i, Sequenced: true, Index: i, Proof: [][]byte{make([]byte, 32)}, Checkpoint: []byte("cp")}})
	}
	if err := s.IndexEvents(t.Context(), events, uint64(n)); err != nil {
		t.Fatal(err)
	}
	rows, err := s.db.QueryContext(t.Context(), `SELECT log_index, leaf, details IS NULL FROM events ORDER BY log_index`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := 0
	for rows.Next() {
		var (
			idx      int64
			leaf     []byte
			noDetail bool
		)
		if err := rows.Scan(&idx, &leaf, &noDetail); err != nil {
			t.Fatal(err)
		}
		if idx != int64(got) || string(leaf) != fmt.Sprintf("leaf %d", got) || !noDetail {
			t.Errorf("row %d: index %d leaf %q details NULL %v", got, idx, leaf, noDetail)
		}
		got++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Errorf("%d rows stored, want %d", got, n)
	}
}
