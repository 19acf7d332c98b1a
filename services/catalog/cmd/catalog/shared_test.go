package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/server"
	"github.com/custody-dev/custody/services/catalog/internal/store/postgres/pgtest"
)

// TestFollowersOnOnePostgres runs catalog processes on one PostgreSQL
// database and one data directory (0047, 0070). The first takes the
// log-writer lease; the second starts as a follower: it serves the store's
// reads itself and forwards writes and log reads to the writer, on behalf
// of the caller it authenticated. Writes through both at once are each in
// the log once, with the original caller as actor, and visible through
// both. A caller that sets the on-behalf-of header itself is refused by
// both. When the writer is SIGKILLed, the follower takes the lease, finishes
// what the first left, and serves writes; a third catalog started then
// follows it.
func TestFollowersOnOnePostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	s := newSharedSetup(t)
	dial := func(addr, who string) catalogv1.CatalogServiceClient { return s.dial(t, addr, who) }
	type clients struct {
		pub, gk, reader, self catalogv1.CatalogServiceClient
	}
	clientsOf := func(addr string) clients {
		return clients{dial(addr, "/service/publisher"), dial(addr, "/service/gatekeeper"), dial(addr, "/deployer/prod"), dial(addr, "/service/catalog")}
	}

	first, addr1 := s.startChild(t, 1)
	second := s.withEndpoints(filepath.Join(s.dir, "run", "catalog-2.json"))
	follower, addr2 := second.startChild(t, 2)
	if b, _ := os.ReadFile(follower.log); !strings.Contains(string(b), "serving as a follower") {
		t.Fatalf("second catalog is not a follower; log:\n%s", b)
	}
	via := []clients{clientsOf(addr1), clientsOf(addr2)}
	gkID := s.td.ID("/service/gatekeeper").String()
	subject := "sha256:" + strings.Repeat("ab", 32)

	// Writes through both at once.
	type ack struct {
		leaf []byte
		via  int
	}
	var (
		mu       sync.Mutex
		acked    = map[int64]ack{}
		recorded = map[int]int64{}
		wg       sync.WaitGroup
		errs     = make(chan error, 64)
	)
	const writers, perWriter = 8, 6
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := via[w%2]
			for n := range perWriter {
				resp, err := c.gk.AppendEvent(t.Context(), &catalogv1.AppendEventRequest{Type: tlog.TypeAdmissionDecided, SubjectDigest: subject,
					Details: fmt.Appendf(nil, `{"w":%d,"n":%d}`, w, n)})
				if err != nil {
					errs <- fmt.Errorf("event %d/%d through catalog %d: %v", w, n, w%2+1, err)
					return
				}
				mu.Lock()
				if _, dup := acked[resp.GetEntry().GetIndex()]; dup {
					errs <- fmt.Errorf("log index %d acknowledged twice", resp.GetEntry().GetIndex())
				}
				acked[resp.GetEntry().GetIndex()] = ack{resp.GetEntry().GetLeaf(), w % 2}
				mu.Unlock()
			}
			rec, err := c.pub.RecordArtifact(t.Context(), crashReq(w))
			if err != nil {
				errs <- fmt.Errorf("record %d through catalog %d: %v", w, w%2+1, err)
				return
			}
			mu.Lock()
			recorded[w] = rec.GetEntry().GetIndex()
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	written := uint64(len(acked) + len(recorded))

	// Every acknowledged entry is in the log once, as acknowledged, with
	// the original caller as actor, through both catalogs.
	for idx, a := range acked {
		e, err := tlog.ParseEntry(a.leaf)
		if err != nil || e.Actor != gkID {
			t.Errorf("entry %d acknowledged through catalog %d: actor %v (%v), want %s", idx, a.via+1, e, err, gkID)
		}
		for i, c := range via {
			resp, err := c.reader.GetEntries(t.Context(), &catalogv1.GetEntriesRequest{Start: uint64(idx), PageSize: 1})
			if err != nil || len(resp.GetEntries()) != 1 || !bytes.Equal(resp.GetEntries()[0], a.leaf) {
				t.Errorf("entry %d through catalog %d: %v", idx, i+1, err)
			}
		}
	}
	for i, c := range via {
		if got := logSize(t, c.reader, s.vkey); got != written {
			t.Errorf("log size through catalog %d: %d, want the %d written", i+1, got, written)
		}
	}
	// The follower reads the store itself: the events and records are
	// there, each once (the indexer stores events from the log shortly
	// after they are acknowledged: 0046).
	listed := func(c catalogv1.CatalogServiceClient) (missing int, err error) {
		seen := map[int64]bool{}
		token := ""
		for {
			resp, err := c.ListEvents(t.Context(), &catalogv1.ListEventsRequest{SubjectDigest: subject, PageToken: token})
			if err != nil {
				return 0, err
			}
			for _, e := range resp.GetEntries() {
				if seen[e.GetIndex()] {
					return 0, fmt.Errorf("entry %d listed twice", e.GetIndex())
				}
				seen[e.GetIndex()] = true
			}
			if token = resp.GetNextPageToken(); token == "" {
				break
			}
		}
		for idx := range acked {
			if !seen[idx] {
				missing++
			}
		}
		return missing, nil
	}
	for i, c := range via {
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			missing, err := listed(c.reader)
			if err != nil {
				t.Fatalf("ListEvents through catalog %d: %v", i+1, err)
			}
			if missing == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ListEvents through catalog %d: %d acknowledged events missing", i+1, missing)
			}
		}
		for w, idx := range recorded {
			got, err := c.reader.GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Name: "app", Version: fmt.Sprintf("1.0.%d", w)})
			if err != nil || got.GetEntry().GetIndex() != idx {
				t.Errorf("GetArtifact 1.0.%d through catalog %d: %v, entry %d, want %d", w, i+1, err, got.GetEntry().GetIndex(), idx)
			}
		}
	}

	// Hostile callers: the on-behalf-of header from anyone but the
	// catalog's own ID is refused, by the writer and by the follower; the
	// catalog's ID without it, or naming a caller the policy denies, too.
	forge := func(who string) context.Context {
		return metadata.AppendToOutgoingContext(t.Context(), server.OnBehalfOfHeader, s.td.ID(who).String())
	}
	for i, c := range via {
		if _, err := c.gk.RecordArtifact(forge("/service/publisher"), crashReq(50+i)); status.Code(err) != codes.PermissionDenied {
			t.Errorf("gatekeeper forging the publisher through catalog %d: %v, want PermissionDenied", i+1, err)
		}
		if _, err := c.pub.AppendEvent(forge("/service/gatekeeper"), &catalogv1.AppendEventRequest{Type: tlog.TypeAdmissionDecided}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("publisher forging the gatekeeper through catalog %d: %v, want PermissionDenied", i+1, err)
		}
		if _, err := c.self.RecordArtifact(t.Context(), crashReq(52+i)); status.Code(err) != codes.PermissionDenied {
			t.Errorf("catalog ID writing as itself through catalog %d: %v, want PermissionDenied", i+1, err)
		}
		if _, err := c.self.RecordArtifact(forge("/service/gatekeeper"), crashReq(54+i)); status.Code(err) != codes.PermissionDenied {
			t.Errorf("catalog ID forwarding for the gatekeeper through catalog %d: %v, want PermissionDenied", i+1, err)
		}
		if _, err := c.gk.RecordArtifact(t.Context(), crashReq(56+i)); status.Code(err) != codes.PermissionDenied {
			t.Errorf("gatekeeper recording through catalog %d: %v, want PermissionDenied", i+1, err)
		}
	}
	if got := logSize(t, via[0].reader, s.vkey); got != written {
		t.Errorf("log size %d after the refused writes, want %d", got, written)
	}

	// The writer dies; the follower takes the lease and writes.
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	first.done <- nil
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := via[1].pub.RecordArtifact(t.Context(), crashReq(writers))
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			b, _ := os.ReadFile(follower.log)
			t.Fatalf("write after the writer died: %v; follower log:\n%s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A third catalog follows the new writer.
	third := s.withEndpoints(filepath.Join(s.dir, "run", "catalog-3.json"))
	_, addr3 := third.startChild(t, 3)
	c3 := clientsOf(addr3)
	resp, err := c3.gk.AppendEvent(t.Context(), &catalogv1.AppendEventRequest{Type: tlog.TypeAdmissionDecided, SubjectDigest: subject, Details: []byte(`{"after":1}`)})
	if err != nil {
		t.Fatalf("event through the third catalog: %v", err)
	}
	if e, err := tlog.ParseEntry(resp.GetEntry().GetLeaf()); err != nil || e.Actor != gkID {
		t.Errorf("event through the third catalog: actor %v (%v), want %s", e, err, gkID)
	}
	for w, idx := range recorded {
		again, err := c3.pub.RecordArtifact(t.Context(), crashReq(w))
		if err != nil || again.GetCreated() || again.GetEntry().GetIndex() != idx {
			t.Errorf("record %d again after the take-over: %v, created %v, entry %d; want the first one's (%d)", w, err, again.GetCreated(), again.GetEntry().GetIndex(), idx)
		}
	}
	for idx, a := range acked {
		r, err := c3.reader.GetEntries(t.Context(), &catalogv1.GetEntriesRequest{Start: uint64(idx), PageSize: 1})
		if err != nil || len(r.GetEntries()) != 1 || !bytes.Equal(r.GetEntries()[0], a.leaf) {
			t.Errorf("entry %d after the take-over: %v", idx, err)
		}
	}
	for i, c := range []catalogv1.CatalogServiceClient{via[1].reader, c3.reader} {
		if got := logSize(t, c, s.vkey); got != written+2 {
			t.Errorf("log size through catalog %d after the take-over: %d, want %d (the first's and two new)", i+2, got, written+2)
		}
	}
	t.Logf("%d events and %d records through two catalogs at once; take-over after SIGKILL", len(acked), len(recorded))
}

// logSize returns the size of the checkpoint c serves, verified.
func logSize(t *testing.T, c catalogv1.CatalogServiceClient, vkey string) uint64 {
	t.Helper()
	resp, err := c.GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := tlog.OpenCheckpoint(resp.GetCheckpoint(), vkey)
	if err != nil {
		t.Fatal(err)
	}
	return cp.Size
}

// withEndpoints returns a copy of s whose catalog writes its endpoints to
// path.
func (s *setup) withEndpoints(path string) *setup {
	c := *s
	c.endpoints = path
	c.args = slices.Clone(s.args)
	c.args[slices.Index(c.args, "--endpoints-file")+1] = path
	return &c
}

// TestWriterStopsWhenLeaseIsLost: when PostgreSQL ends the writer's lease
// session while the writer lives (a restart, a cut connection), the writer
// stops at once, and the follower takes the lease and writes: never two
// writers of the log (0070).
func TestWriterStopsWhenLeaseIsLost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dsn := pgtest.Database(t)
	s := newSetup(t)
	s.args = append(s.args, "--store", "postgres", "--postgres-dsn-file", pgtest.DSNFile(t, dsn), "--lease-poll", "200ms")
	first, _ := s.startChild(t, 1)
	second := s.withEndpoints(filepath.Join(s.dir, "run", "catalog-2.json"))
	follower, addr2 := second.startChild(t, 2)
	conn, err := rpc.Dial(addr2, s.td.ID("/service/catalog"), s.td.Source(t, "/service/publisher"), telemetry.Discard("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pub := catalogv1.NewCatalogServiceClient(conn)
	if _, err := pub.RecordArtifact(t.Context(), crashReq(0)); err != nil {
		t.Fatalf("write through the follower: %v", err)
	}

	db, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(t.Context())
	var n int
	if err := db.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND classid = x'6c656173'::int::oid AND granted`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the writer's lease session: %d sessions, %v", n, err)
	}
	select {
	case err := <-first.done:
		first.done <- err
		if b, _ := os.ReadFile(first.log); !strings.Contains(string(b), "lost the log-writer lease") {
			t.Errorf("writer exited (%v) without saying it lost the lease; log:\n%s", err, b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the writer still runs 10s after losing its lease")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := pub.RecordArtifact(t.Context(), crashReq(1))
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			b, _ := os.ReadFile(follower.log)
			t.Fatalf("write after the lease moved: %v; follower log:\n%s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := logSize(t, pub, s.vkey); got != 2 {
		t.Errorf("log size %d, want the 2 records", got)
	}
}

// newSharedSetup is a setup whose catalogs share one new PostgreSQL
// database (and the data directory), so the first started holds the
// log-writer lease and the others follow it.
func newSharedSetup(t *testing.T) *setup {
	t.Helper()
	dsn := pgtest.Database(t)
	s := newSetup(t)
	s.args = append(s.args, "--store", "postgres", "--postgres-dsn-file", pgtest.DSNFile(t, dsn), "--lease-poll", "200ms")
	return s
}

// dial returns a catalog client at addr with who's identity.
func (s *setup) dial(t *testing.T, addr, who string) catalogv1.CatalogServiceClient {
	t.Helper()
	conn, err := rpc.Dial(addr, s.td.ID("/service/catalog"), s.td.Source(t, who), telemetry.Discard("test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return catalogv1.NewCatalogServiceClient(conn)
}

// startWriterAndFollower starts a writer and a follower on a shared
// setup and returns their addresses; it fails if the second is not a
// follower.
func (s *setup) startWriterAndFollower(t *testing.T) (writer, follower string) {
	t.Helper()
	_, writer = s.startChild(t, 1)
	second := s.withEndpoints(filepath.Join(s.dir, "run", "catalog-2.json"))
	c, follower := second.startChild(t, 2)
	if b, _ := os.ReadFile(c.log); !strings.Contains(string(b), "serving as a follower") {
		t.Fatalf("second catalog is not a follower; log:\n%s", b)
	}
	return writer, follower
}
