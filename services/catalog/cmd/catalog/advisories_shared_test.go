package main

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/tlog"
)

// TestFollowerForwardsAdvisoryImport: an advisory import sent to a
// follower is relayed to the log writer as one stream, logged once with
// the importer (not the follower) as actor, and readable through both; a
// caller the policy refuses is refused by the follower itself.
func TestFollowerForwardsAdvisoryImport(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	s := newSharedSetup(t)
	dial := func(addr, who string) catalogv1.CatalogServiceClient { return s.dial(t, addr, who) }
	addr1, addr2 := s.startWriterAndFollower(t)
	paths, err := filepath.Glob(filepath.Join("..", "..", "..", "..", "libs", "advisory", "testdata", "osv", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no OSV testdata: %v", err)
	}
	var docs [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	send := func(c catalogv1.CatalogServiceClient) (*catalogv1.ImportAdvisoriesResponse, error) {
		st, err := c.ImportAdvisories(t.Context())
		if err != nil {
			return nil, err
		}
		for _, d := range docs {
			if err := st.Send(&catalogv1.ImportAdvisoriesRequest{Documents: [][]byte{d}}); err != nil {
				break
			}
		}
		return st.CloseAndRecv()
	}
	if _, err := send(dial(addr2, "/deployer/prod")); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("import by a deployer through the follower: %v, want PermissionDenied", err)
	}
	resp, err := send(dial(addr2, "/security/osv"))
	if err != nil {
		t.Fatal(err)
	}
	le, err := tlog.ParseEntry(resp.GetEntry().GetLeaf())
	if err != nil || le.Type != tlog.TypeAdvisoriesImported || le.Actor != s.td.ID("/security/osv").String() || !resp.GetCreated() ||
		resp.GetCount() != uint32(len(docs)) {
		t.Fatalf("import through the follower: %v, entry %+v, %v", resp, le, err)
	}
	// Again through the writer: the same import.
	again, err := send(dial(addr1, "/admin/ops"))
	if err != nil || again.GetCreated() || again.GetEntry().GetIndex() != resp.GetEntry().GetIndex() {
		t.Errorf("re-import through the writer: %v, %v; want the first import", again, err)
	}
	for i, addr := range []string{addr1, addr2} {
		if a, err := dial(addr, "/auditor/audit").GetAdvisory(t.Context(), &catalogv1.GetAdvisoryRequest{Id: "GO-2021-0113"}); err != nil || a.GetSetDigest() != resp.GetSetDigest() {
			t.Errorf("GetAdvisory through catalog %d: %v, %v", i+1, a, err)
		}
	}
}
