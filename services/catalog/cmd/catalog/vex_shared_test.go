package main

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/server"
)

// TestFollowerForwardsVex: a VEX document sent to a follower is relayed
// to the log writer, logged once as a vex.added entry with the security
// identity (not the follower) as actor, and listed through both catalogs;
// identities the policy refuses, and a caller forging the on-behalf-of
// header of a security identity, are refused by the follower itself and
// log nothing.
func TestFollowerForwardsVex(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	s := newSharedSetup(t)
	dial := func(addr, who string) catalogv1.CatalogServiceClient { return s.dial(t, addr, who) }
	addr1, addr2 := s.startWriterAndFollower(t)

	rec, err := dial(addr1, "/service/publisher").RecordArtifact(t.Context(), crashReq(1))
	if err != nil {
		t.Fatal(err)
	}
	a := crashReq(1).GetArtifact()
	doc := []byte(`{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://custody.example/vex/1","author":"security",
 "timestamp":"2026-12-03T10:00:00Z","version":1,"statements":[{"vulnerability":{"name":"GHSA-jf85-cpcp-j695"},
 "products":[{"@id":"` + a.GetDigest() + `"}],"status":"not_affected","justification":"vulnerable_code_not_in_execute_path"}]}`)
	req := &catalogv1.AddVexRequest{Name: a.GetName(), Version: a.GetVersion(), Document: doc}

	follower := dial(addr2, "/security/triage")
	for _, who := range []string{"/admin/ops", "/deployer/prod", "/service/gatekeeper", "/edge/eu"} {
		if _, err := dial(addr2, who).AddVex(t.Context(), req); status.Code(err) != codes.PermissionDenied {
			t.Errorf("AddVex by %s through the follower: %v, want PermissionDenied", who, err)
		}
	}
	forged := metadata.AppendToOutgoingContext(context.Background(), server.OnBehalfOfHeader, s.td.ID("/security/triage").String())
	if _, err := dial(addr2, "/service/gatekeeper").AddVex(forged, req); status.Code(err) != codes.PermissionDenied {
		t.Errorf("gatekeeper forging a security identity through the follower: %v, want PermissionDenied", err)
	}

	resp, err := follower.AddVex(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	le, err := tlog.ParseEntry(resp.GetEntry().GetLeaf())
	if err != nil || le.Type != tlog.TypeVEXAdded || le.Actor != s.td.ID("/security/triage").String() || le.Subject.Digest != a.GetDigest() ||
		resp.GetStatements() != 1 || resp.GetEntry().GetIndex() <= rec.GetEntry().GetIndex() {
		t.Fatalf("VEX through the follower: %v, entry %+v, %v", resp, le, err)
	}
	for i, addr := range []string{addr1, addr2} {
		list, err := dial(addr, "/service/gatekeeper").ListVex(t.Context(), &catalogv1.ListVexRequest{Digest: a.GetDigest()})
		if err != nil || len(list.GetEntries()) != 1 || list.GetTruncated() || list.GetEntries()[0].GetIndex() != resp.GetEntry().GetIndex() {
			t.Errorf("ListVex through catalog %d: %v, %v; want the one entry %d", i+1, list, err, resp.GetEntry().GetIndex())
		}
	}
}
