package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/store/postgres/pgtest"
)

// TestOneLogWriterPerPostgres runs catalog processes on one PostgreSQL
// database and one data directory. The first takes the log-writer lease
// and serves reads and writes; a second one started meanwhile refuses to
// run, with an error that says why, and touches neither the log nor the
// store (two Tessera POSIX appenders on one directory can panic: 0047).
// When the writer is SIGKILLed, PostgreSQL drops its lease and the next
// catalog takes over: it serves what the first recorded, answers a record
// sent to both with the same entry, and stores the events the first
// acknowledged but had not stored.
func TestOneLogWriterPerPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dsn := pgtest.Database(t)
	s := newSetup(t)
	s.args = append(s.args, "--store", "postgres", "--postgres-dsn-file", pgtest.DSNFile(t, dsn))
	dial := func(addr, who string) catalogv1.CatalogServiceClient {
		conn, err := rpc.Dial(addr, s.td.ID("/service/catalog"), s.td.Source(t, who), telemetry.Discard("test"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return catalogv1.NewCatalogServiceClient(conn)
	}

	first, addr := s.startChild(t, 1)
	pub, gk := dial(addr, "/service/publisher"), dial(addr, "/service/gatekeeper")
	recorded := map[int]int64{}
	for i := range 5 {
		resp, err := pub.RecordArtifact(t.Context(), crashReq(i))
		if err != nil {
			t.Fatal(err)
		}
		recorded[i] = resp.GetEntry().GetIndex()
	}
	acked := map[int64][]byte{}
	for n := range 20 {
		resp, err := gk.AppendEvent(t.Context(), &catalogv1.AppendEventRequest{Type: tlog.TypeAdmissionDecided,
			Details: fmt.Appendf(nil, `{"n":%d}`, n), Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED})
		if err != nil {
			t.Fatal(err)
		}
		acked[resp.GetEntry().GetIndex()] = resp.GetEntry().GetLeaf()
	}
	size := func(c catalogv1.CatalogServiceClient) uint64 {
		t.Helper()
		resp, err := c.GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})
		if err != nil {
			t.Fatal(err)
		}
		cp, err := tlog.OpenCheckpoint(resp.GetCheckpoint(), s.vkey)
		if err != nil {
			t.Fatal(err)
		}
		return cp.Size
	}
	// Served checkpoints may lag the events acknowledged once sequenced,
	// never run ahead of what was written.
	written := uint64(len(recorded) + len(acked))

	// A second catalog on the same database refuses to start.
	second := s.withEndpoints(filepath.Join(s.dir, "run", "catalog-2.json"))
	out, err := second.runToExit(t, 30*time.Second)
	if err == nil || !strings.Contains(out, "holds the log-writer lease") {
		t.Fatalf("second catalog on one database: exit %v, want a refusal naming the log-writer lease; log:\n%s", err, out)
	}
	if got := size(gk); got > written {
		t.Errorf("log size %d after the refused start, want at most the %d written", got, written)
	}

	// The writer dies; the next one takes over.
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	first.done <- nil
	_, addr = second.startChild(t, 3)
	pub, gk = dial(addr, "/service/publisher"), dial(addr, "/service/gatekeeper")
	reader := dial(addr, "/deployer/prod")
	for i, idx := range recorded {
		got, err := reader.GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Name: "app", Version: fmt.Sprintf("1.0.%d", i)})
		if err != nil {
			t.Fatalf("after the take-over, read record %d: %v", i, err)
		}
		if got.GetEntry().GetIndex() != idx {
			t.Errorf("record %d: entry %d, first recorded at %d", i, got.GetEntry().GetIndex(), idx)
		}
		again, err := pub.RecordArtifact(t.Context(), crashReq(i))
		if err != nil || again.GetCreated() || again.GetEntry().GetIndex() != idx {
			t.Errorf("record %d again: %v, created %v, entry %d; want the first one's (%d)", i, err, again.GetCreated(), again.GetEntry().GetIndex(), idx)
		}
	}
	if _, err := pub.RecordArtifact(t.Context(), crashReq(5)); err != nil {
		t.Errorf("write after the take-over: %v", err)
	}
	listed := 0
	for idx, leaf := range acked {
		resp, err := reader.GetEntries(t.Context(), &catalogv1.GetEntriesRequest{Start: uint64(idx), PageSize: 1})
		if err != nil || len(resp.GetEntries()) != 1 || !bytes.Equal(resp.GetEntries()[0], leaf) {
			t.Errorf("acknowledged event %d is not in the log as acknowledged: %v", idx, err)
			continue
		}
		listed++
	}
	if got := size(gk); got != written+1 {
		t.Errorf("log size %d, want %d: the take-over appended other than the one new record", got, written+1)
	}
	t.Logf("%d records and %d events by the first writer, read and extended by the second", len(recorded), listed)
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

// runToExit runs the catalog and waits, at most d, for it to exit; it
// returns its log and exit error.
func (s *setup) runToExit(t *testing.T, d time.Duration) (string, error) {
	t.Helper()
	args, _ := json.Marshal(s.args)
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childArgsEnv+"="+string(args))
	out, err := cmd.CombinedOutput()
	return string(out), err
}
