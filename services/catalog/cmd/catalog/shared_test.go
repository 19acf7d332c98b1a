package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/store/postgres/pgtest"
	"github.com/custody-dev/custody/services/catalog/internal/translog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestTwoCatalogsShareOnePostgres runs two catalog processes on one
// PostgreSQL database and one log directory, writing and reading at once:
// every record is sent to both processes at the same moment, events are
// appended through both, and each reads what the other wrote. Then every
// name@version is in the log exactly once (the per-name@version lock holds
// across processes), both answered it with the same entry, every
// acknowledged event is in the log once, and the store holds each event of
// the log once, at its index.
func TestTwoCatalogsShareOnePostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dsn := pgtest.Database(t)
	s := newSetup(t)
	s.args = append(s.args, "--store", "postgres", "--postgres-dsn-file", pgtest.DSNFile(t, dsn))
	procA, addrA := s.startChild(t, 1)
	s2 := *s
	s2.endpoints = filepath.Join(s.dir, "run", "catalog-2.json")
	s2.args = slices.Clone(s.args)
	s2.args[slices.Index(s2.args, "--endpoints-file")+1] = s2.endpoints
	procB, addrB := s2.startChild(t, 2)

	dial := func(addr, who string) catalogv1.CatalogServiceClient {
		conn, err := rpc.Dial(addr, s.td.ID("/service/catalog"), s.td.Source(t, who), telemetry.Discard("test"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return catalogv1.NewCatalogServiceClient(conn)
	}
	pubs := []catalogv1.CatalogServiceClient{dial(addrA, "/service/publisher"), dial(addrB, "/service/publisher")}
	gks := []catalogv1.CatalogServiceClient{dial(addrA, "/service/gatekeeper"), dial(addrB, "/service/gatekeeper")}
	readers := []catalogv1.CatalogServiceClient{dial(addrA, "/deployer/prod"), dial(addrB, "/deployer/prod")}

	const records, eventsPerWorker = 30, 25
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		acked  = map[uint64][]byte{}
		failed []error
	)
	fail := func(err error) {
		mu.Lock()
		failed = append(failed, err)
		mu.Unlock()
	}
	for i := range records {
		// The same record to both processes at once.
		indices := make([]int64, 2)
		var both sync.WaitGroup
		for p := range 2 {
			both.Go(func() {
				resp, err := pubs[p].RecordArtifact(t.Context(), crashReq(i))
				if err != nil {
					fail(fmt.Errorf("record %d through catalog %d: %w", i, p+1, err))
					return
				}
				indices[p] = resp.GetEntry().GetIndex()
			})
		}
		wg.Go(func() {
			both.Wait()
			if indices[0] != indices[1] {
				fail(fmt.Errorf("record %d: catalog 1 answered entry %d, catalog 2 entry %d", i, indices[0], indices[1]))
			}
			// Each reads what both wrote.
			for p := range 2 {
				if _, err := readers[p].GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Name: "app", Version: fmt.Sprintf("1.0.%d", i)}); err != nil {
					fail(fmt.Errorf("read record %d from catalog %d: %w", i, p+1, err))
				}
			}
		})
	}
	for w := range 8 {
		wg.Go(func() {
			for n := range eventsPerWorker {
				resp, err := gks[w%2].AppendEvent(t.Context(), &catalogv1.AppendEventRequest{Type: tlog.TypeAdmissionDecided,
					Details: fmt.Appendf(nil, `{"w":%d,"n":%d}`, w, n), Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED})
				if err != nil {
					fail(fmt.Errorf("event through catalog %d: %w", w%2+1, err))
					return
				}
				mu.Lock()
				acked[uint64(resp.GetEntry().GetIndex())] = resp.GetEntry().GetLeaf()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range failed {
		t.Error(err)
	}
	if len(failed) > 0 {
		for _, p := range []*child{procA, procB} {
			b, _ := os.ReadFile(p.log)
			t.Logf("%s:\n%s", p.log, tail(b, 4000))
		}
		t.FailNow()
	}
	if _, err := readers[1].GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Name: "app", Version: "9.9.9"}); status.Code(err) != codes.NotFound {
		t.Errorf("missing artifact: %v, want NotFound", err)
	}

	// The store catches up with the log: a catalog restarted on it indexes
	// whatever the two left unindexed.
	cp, err := gks[0].GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	final, err := tlog.OpenCheckpoint(cp.GetCheckpoint(), s.vkey)
	if err != nil {
		t.Fatal(err)
	}
	_, addrC := s.startChild(t, 3)
	dial(addrC, "/service/gatekeeper").GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})

	key, err := os.ReadFile(filepath.Join(s.dir, "log.key"))
	if err != nil {
		t.Fatal(err)
	}
	tl, err := translog.Open(t.Context(), translog.Config{Dir: filepath.Join(s.dir, "data", "log"), SignerKey: string(key)})
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close(context.Background())
	size, err := tl.Size(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if size < final.Size {
		t.Fatalf("log size %d below a served checkpoint's %d", size, final.Size)
	}
	leaves, err := tl.Entries(t.Context(), 0, size, size)
	if err != nil {
		t.Fatal(err)
	}
	published := map[string]int{}
	events := map[uint64]bool{}
	for i, leaf := range leaves {
		e, err := tlog.ParseEntry(leaf)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if e.Type == tlog.TypeArtifactPublished {
			published[e.Subject.Name+"@"+e.Subject.Version]++
		} else {
			events[uint64(i)] = true
		}
	}
	for name, n := range published {
		if n != 1 {
			t.Errorf("%s is in the log %d times, want once", name, n)
		}
	}
	if len(published) != records {
		t.Errorf("%d name@versions in the log, want %d", len(published), records)
	}
	for idx, leaf := range acked {
		if int(idx) >= len(leaves) || string(leaves[idx]) != string(leaf) {
			t.Errorf("acknowledged event %d is not in the log as acknowledged", idx)
		}
	}
	if len(acked) != 8*eventsPerWorker {
		t.Errorf("%d events acknowledged at distinct indices, want %d", len(acked), 8*eventsPerWorker)
	}

	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), `SELECT log_index FROM events WHERE checkpoint IS NOT NULL ORDER BY log_index`)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != len(events) {
		t.Errorf("store holds %d logged events, the log %d", len(stored), len(events))
	}
	for _, idx := range stored {
		if !events[uint64(idx)] {
			t.Errorf("stored event at %d is not an event of the log", idx)
		}
	}
	t.Logf("log size %d: %d records (each sent to both catalogs), %d events acknowledged", size, len(published), len(acked))
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
