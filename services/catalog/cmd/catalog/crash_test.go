package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/store/postgres/pgtest"
)

// childArgsEnv, when set, makes the test binary run the catalog with these
// JSON-encoded arguments instead of the tests, so a test can SIGKILL it.
const childArgsEnv = "CATALOG_TEST_CHILD_ARGS"

func TestMain(m *testing.M) {
	if v := os.Getenv(childArgsEnv); v != "" {
		var args []string
		if err := json.Unmarshal([]byte(v), &args); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, args, os.Getenv, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "catalog:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(pgtest.Main(m))
}

// child is the catalog running in its own process.
type child struct {
	cmd  *exec.Cmd
	done chan error
	log  string
}

func (s *setup) startChild(t *testing.T, n int) (*child, string) {
	t.Helper()
	os.Remove(s.endpoints)
	args, _ := json.Marshal(s.args)
	c := &child{done: make(chan error, 1), log: filepath.Join(s.dir, fmt.Sprintf("catalog-%d.log", n))}
	logFile, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), childArgsEnv+"="+string(args))
	c.cmd.Stderr = logFile
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait(); logFile.Close() }()
	t.Cleanup(func() { c.cmd.Process.Kill(); <-c.done })
	readLog := func() string { b, _ := os.ReadFile(c.log); return string(b) }
	addr := s.waitEndpoints(t, func() error {
		select {
		case err := <-c.done:
			c.done <- err
			return fmt.Errorf("exited: %v", err)
		default:
			return nil
		}
	}, readLog)
	return c, addr
}

func crashReq(i int) *catalogv1.RecordArtifactRequest {
	content := fmt.Sprintf("build %d", i)
	sum := sha256.Sum256([]byte(content))
	a := &catalogv1.Artifact{Name: "app", Version: fmt.Sprintf("1.0.%d", i), Digest: "sha256:" + hex.EncodeToString(sum[:]),
		Size: int64(len(content)), Channel: "stable", BuilderId: "spiffe://custody.test/builder/ci"}
	statement, err := attest.NewProvenance(attest.Artifact{Name: a.Name, Version: a.Version, Digest: a.Digest,
		Channel: a.Channel, BuilderID: a.BuilderId})
	if err != nil {
		panic(err)
	}
	env, err := attest.SignEnvelope(attest.PayloadType, statement, "k", func([]byte) ([]byte, error) { return []byte("sig"), nil })
	if err != nil {
		panic(err)
	}
	return &catalogv1.RecordArtifactRequest{Artifact: a, Envelope: env}
}

// TestSurvivesKill kills the catalog process with SIGKILL while records are
// in flight, restarts it, and has the publisher retry everything it sent:
// every record must end up in the log exactly once, and what was confirmed
// before the kill must be unchanged.
func TestSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills processes")
	}
	s := newSetup(t)
	proc, addr := s.startChild(t, 1)
	dial := func(addr string) catalogv1.CatalogServiceClient {
		conn, err := rpc.Dial(addr, s.td.ID("/service/catalog"), s.td.Source(t, "/service/publisher"), telemetry.Discard("test"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return catalogv1.NewCatalogServiceClient(conn)
	}
	pub := dial(addr)

	const workers = 32
	attempted, confirmed := writeThenKill(t, proc, workers, -1, 100, func(ctx context.Context, i int) (int64, error) {
		resp, err := pub.RecordArtifact(ctx, crashReq(i))
		return resp.GetEntry().GetIndex(), err
	})
	t.Logf("killed with %d records attempted, %d confirmed", len(attempted), len(confirmed))
	if len(confirmed) == 0 {
		t.Fatal("nothing was recorded before the kill")
	}

	_, addr = s.startChild(t, 2)
	pub = dial(addr)
	indices := map[int64]int{}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	sem := make(chan struct{}, workers)
	for i := range attempted {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			resp, err := pub.RecordArtifact(t.Context(), crashReq(i))
			if err != nil {
				t.Errorf("retry of record %d: %v", i, err)
				return
			}
			idx := resp.GetEntry().GetIndex()
			mu.Lock()
			defer mu.Unlock()
			if before, ok := confirmed[i]; ok && (resp.GetCreated() || idx != before) {
				t.Errorf("record %d confirmed at %d before the kill; after: index %d, created %v", i, before, idx, resp.GetCreated())
			}
			if other, dup := indices[idx]; dup {
				t.Errorf("records %d and %d share index %d", other, i, idx)
			}
			indices[idx] = i
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(s.dir, "catalog-2.log"))
			t.Logf("log after restart:\n%s", b)
		}
	})
	cpResp, err := pub.GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := tlog.OpenCheckpoint(cpResp.GetCheckpoint(), s.vkey)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != uint64(len(attempted)) {
		t.Errorf("log has %d entries for %d distinct records: lost or duplicated entries", cp.Size, len(attempted))
	}
}

// writeThenKill runs write for items 0, 1, ... from workers goroutines (up to
// limit items; -1: no limit), SIGKILLs proc once want writes are confirmed
// (or after 20 s), and returns which items were attempted and the log index
// of each confirmed one.
func writeThenKill(t *testing.T, proc *child, workers, limit, want int, write func(ctx context.Context, i int) (int64, error)) (map[int]bool, map[int]int64) {
	t.Helper()
	var (
		mu        sync.Mutex
		attempted = map[int]bool{}
		confirmed = map[int]int64{}
		next      int
		wg        sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(t.Context())
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				i := next
				next++
				if limit >= 0 && i >= limit {
					mu.Unlock()
					return
				}
				attempted[i] = true
				mu.Unlock()
				idx, err := write(ctx, i)
				if err != nil {
					return
				}
				mu.Lock()
				confirmed[i] = idx
				mu.Unlock()
			}
		})
	}
	// Kill once a good number of writes went through, mid-stream.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(confirmed)
		mu.Unlock()
		if n >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-proc.done
	proc.done <- nil
	cancel()
	wg.Wait()
	return attempted, confirmed
}
