package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
)

// eventKills is how many times TestEventsSurviveRepeatedKills kills the
// catalog.
const eventKills = 50

// TestEventsSurviveRepeatedKills streams events into the catalog from
// several gatekeeper connections (most acknowledged once sequenced, some
// once proved; half the workers send AppendEvents calls of eight) and SIGKILLs it at a random moment, eventKills times, each
// time restarting it on the same data directory. Then: every acknowledged
// event is in the log at the index it was acknowledged with, and in the
// store; the store holds exactly the log's entries, each once, each with an
// inclusion proof that verifies; and every checkpoint the catalog served
// along the way is a prefix of the final tree (the log verifies from its
// first checkpoint to its last).
func TestEventsSurviveRepeatedKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills processes")
	}
	s := newSetup(t)
	type ack struct {
		index int64
		leaf  []byte
	}
	var (
		acks        []ack
		checkpoints [][]byte
		next        int
	)
	for round := range eventKills + 1 {
		proc, addr := s.startChild(t, round)
		conn, err := rpc.Dial(addr, s.td.ID("/service/catalog"), s.td.Source(t, "/service/gatekeeper"), telemetry.Discard("test"))
		if err != nil {
			t.Fatal(err)
		}
		gk := catalogv1.NewCatalogServiceClient(conn)
		cp, err := gk.GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})
		if err != nil {
			t.Fatalf("round %d: GetCheckpoint after restart: %v", round, err)
		}
		checkpoints = append(checkpoints, cp.GetCheckpoint())
		if round == eventKills {
			conn.Close()
			break
		}

		var (
			mu sync.Mutex
			wg sync.WaitGroup
		)
		ctx, cancel := context.WithCancel(t.Context())
		for w := range 16 {
			wait := catalogv1.AppendWait_APPEND_WAIT_SEQUENCED
			if w%4 == 0 {
				wait = catalogv1.AppendWait_APPEND_WAIT_PROVED
			}
			wg.Go(func() {
				for ctx.Err() == nil {
					if w%2 == 1 {
						// AppendEvents: a call's events are sequenced
						// together; every one acknowledged counts.
						reqs := make([]*catalogv1.AppendEventRequest, 8)
						mu.Lock()
						for i := range reqs {
							reqs[i] = &catalogv1.AppendEventRequest{Type: tlog.TypeAdmissionDecided,
								Details: fmt.Appendf(nil, `{"n":%d}`, next), Wait: wait}
							if i == 7 {
								reqs[i].Wait = catalogv1.AppendWait_APPEND_WAIT_PROVED
							}
							next++
						}
						mu.Unlock()
						resp, err := gk.AppendEvents(ctx, &catalogv1.AppendEventsRequest{Events: reqs})
						if err != nil {
							return
						}
						for i, r := range resp.GetResults() {
							if r.GetCode() != 0 {
								continue
							}
							if reqs[i].Wait == catalogv1.AppendWait_APPEND_WAIT_PROVED {
								checkAcked(t, s.vkey, r.GetEntry())
							}
							mu.Lock()
							acks = append(acks, ack{r.GetEntry().GetIndex(), r.GetEntry().GetLeaf()})
							mu.Unlock()
						}
						continue
					}
					mu.Lock()
					n := next
					next++
					mu.Unlock()
					resp, err := gk.AppendEvent(ctx, &catalogv1.AppendEventRequest{Type: tlog.TypeAdmissionDecided,
						Details: fmt.Appendf(nil, `{"n":%d}`, n), Wait: wait})
					if err != nil {
						return
					}
					if wait == catalogv1.AppendWait_APPEND_WAIT_PROVED {
						checkAcked(t, s.vkey, resp.GetEntry())
					}
					mu.Lock()
					acks = append(acks, ack{resp.GetEntry().GetIndex(), resp.GetEntry().GetLeaf()})
					mu.Unlock()
				}
			})
		}
		time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond)
		if err := proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-proc.done
		proc.done <- nil
		cancel()
		wg.Wait()
		conn.Close()
	}
	if len(acks) < eventKills {
		t.Fatalf("only %d events acknowledged over %d runs: the kills came too early to test anything", len(acks), eventKills)
	}

	// The store as the last run left it, after its recovery.
	rows := storedEvents(t, filepath.Join(s.dir, "data", "catalog.db"))
	final, err := tlog.OpenCheckpoint(checkpoints[len(checkpoints)-1], s.vkey)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d kills; %d events acknowledged, %d attempted; log size %d", eventKills, len(acks), next, final.Size)
	if uint64(len(rows)) != final.Size {
		t.Fatalf("store has %d events, the log %d entries: they disagree", len(rows), final.Size)
	}
	leaves := make([][]byte, final.Size)
	for _, r := range rows {
		if r.index < 0 || uint64(r.index) >= final.Size || leaves[r.index] != nil {
			t.Fatalf("event %d at log index %d: out of range or a duplicate", r.id, r.index)
		}
		leaves[r.index] = r.leaf
		cp, err := tlog.OpenCheckpoint(r.checkpoint, s.vkey)
		if err != nil {
			t.Fatalf("event %d: stored checkpoint: %v", r.id, err)
		}
		if err := tlog.VerifyInclusion(r.leaf, uint64(r.index), r.proof, cp); err != nil {
			t.Fatalf("event %d: stored proof: %v", r.id, err)
		}
	}
	for _, a := range acks {
		if !bytes.Equal(leaves[a.index], a.leaf) {
			t.Errorf("acknowledged event at %d is not in the log and the store as acknowledged", a.index)
		}
	}
	// Every served checkpoint is the root of a prefix of the final tree.
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(0)
	roots := map[uint64][]byte{0: rfc6962.DefaultHasher.EmptyRoot()}
	for i, leaf := range leaves {
		if err := r.Append(rfc6962.DefaultHasher.HashLeaf(leaf), nil); err != nil {
			t.Fatal(err)
		}
		root, err := r.GetRootHash(nil)
		if err != nil {
			t.Fatal(err)
		}
		roots[uint64(i)+1] = root
	}
	var last uint64
	for i, signed := range checkpoints {
		cp, err := tlog.OpenCheckpoint(signed, s.vkey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tlog.OpenCosigned(signed, cp.Origin, s.cosigner.VerifierKey()); err != nil {
			t.Errorf("checkpoint after restart %d is not co-signed: %v", i, err)
		}
		if cp.Size < last || !bytes.Equal(roots[cp.Size], cp.Hash) {
			t.Errorf("checkpoint after restart %d (size %d) is not a prefix of the final tree", i, cp.Size)
		}
		last = cp.Size
	}
}

// checkAcked verifies a proved event's entry as a client would.
func checkAcked(t *testing.T, vkey string, e *catalogv1.LogEntry) {
	cp, err := tlog.OpenCheckpoint(e.GetCheckpoint(), vkey)
	if err == nil {
		err = tlog.VerifyInclusion(e.GetLeaf(), uint64(e.GetIndex()), e.GetInclusionProof(), cp)
	}
	if err != nil {
		t.Errorf("proved event %d: %v", e.GetIndex(), err)
	}
}

type storedEvent struct {
	id, index  int64
	leaf       []byte
	proof      [][]byte
	checkpoint []byte
}

// storedEvents reads every event row; it fails the test if one is still
// pending.
func storedEvents(t *testing.T, path string) []storedEvent {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(t.Context(), `SELECT id, leaf, log_index, proof, checkpoint FROM events ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []storedEvent
	for rows.Next() {
		var (
			e     storedEvent
			index sql.NullInt64
			flat  []byte
		)
		if err := rows.Scan(&e.id, &e.leaf, &index, &flat, &e.checkpoint); err != nil {
			t.Fatal(err)
		}
		if !index.Valid || len(e.checkpoint) == 0 {
			t.Fatalf("event %d is still pending after recovery", e.id)
		}
		e.index = index.Int64
		for i := 0; i+32 <= len(flat); i += 32 {
			e.proof = append(e.proof, flat[i:i+32])
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
