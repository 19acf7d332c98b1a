package main

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
)

// resignReq re-signs crashReq(i)'s statement with a rotated key.
func resignReq(i int) *catalogv1.RecordSignatureRequest {
	r := crashReq(i)
	e, err := attest.ParseEnvelope(r.GetEnvelope())
	if err != nil {
		panic(err)
	}
	env, err := attest.SignEnvelope(e.PayloadType, e.Payload, strings.Repeat("e", 64), func([]byte) ([]byte, error) { return []byte("sig2"), nil })
	if err != nil {
		panic(err)
	}
	return &catalogv1.RecordSignatureRequest{Name: r.GetArtifact().GetName(), Version: r.GetArtifact().GetVersion(), Envelope: env}
}

// TestResignSurvivesKill kills the catalog with SIGKILL while re-signatures
// are in flight, restarts it and has the signer retry every one: each must
// be logged exactly once, be the artifact's current envelope, and those
// confirmed before the kill must be unchanged.
func TestResignSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills processes")
	}
	s := newSetup(t)
	proc, addr := s.startChild(t, 1)
	dial := func(addr, as string) catalogv1.CatalogServiceClient {
		conn, err := rpc.Dial(addr, s.td.ID("/service/catalog"), s.td.Source(t, as), telemetry.Discard("test"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return catalogv1.NewCatalogServiceClient(conn)
	}
	const (
		workers   = 32
		artifacts = 256
	)
	pub, adm := dial(addr, "/service/publisher"), dial(addr, "/service/signer")
	var wg sync.WaitGroup
	sem := make(chan struct{}, workers)
	for i := range artifacts {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := pub.RecordArtifact(t.Context(), crashReq(i)); err != nil {
				t.Errorf("record %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	attempted, confirmed := writeThenKill(t, proc, workers, artifacts, 64, func(ctx context.Context, i int) (int64, error) {
		resp, err := adm.RecordSignature(ctx, resignReq(i))
		return resp.GetEntry().GetIndex(), err
	})
	t.Logf("killed with %d re-signatures attempted, %d confirmed", len(attempted), len(confirmed))
	if len(confirmed) == 0 || len(attempted) == artifacts {
		t.Fatalf("the kill did not interrupt re-signatures (%d attempted, %d confirmed); the test proves nothing", len(attempted), len(confirmed))
	}

	_, addr = s.startChild(t, 2)
	adm = dial(addr, "/service/signer")
	indices := map[int64]int{}
	var mu sync.Mutex
	for i := range attempted {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			req := resignReq(i)
			resp, err := adm.RecordSignature(t.Context(), req)
			if err != nil {
				t.Errorf("retry of re-signature %d: %v", i, err)
				return
			}
			idx := resp.GetEntry().GetIndex()
			got, err := adm.GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Name: req.GetName(), Version: req.GetVersion()})
			if err != nil || string(got.GetEnvelope()) != string(req.GetEnvelope()) || got.GetEntry().GetIndex() != idx {
				t.Errorf("re-signature %d is not current after the retry: %v", i, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if before, ok := confirmed[i]; ok && idx != before {
				t.Errorf("re-signature %d confirmed at %d before the kill; after: index %d", i, before, idx)
			}
			if other, dup := indices[idx]; dup {
				t.Errorf("re-signatures %d and %d share index %d", other, i, idx)
			}
			indices[idx] = i
		})
	}
	wg.Wait()
	cpResp, err := adm.GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := tlog.OpenCheckpoint(cpResp.GetCheckpoint(), s.vkey)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(artifacts + len(attempted)); cp.Size != want {
		t.Errorf("log has %d entries for %d artifacts and %d re-signatures: lost or duplicated entries", cp.Size, artifacts, len(attempted))
	}
}
