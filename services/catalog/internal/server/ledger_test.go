package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
)

// appendEvents logs n events through the gatekeeper and returns their
// leaves in log order.
func appendEvents(t *testing.T, e *env, n int) [][]byte {
	t.Helper()
	gk := e.client(t, "/service/gatekeeper")
	leaves := make([][]byte, n)
	var g errgroup.Group
	g.SetLimit(64)
	for i := range n {
		g.Go(func() error {
			resp, err := gk.AppendEvent(t.Context(), &catalogv1.AppendEventRequest{Type: tlog.TypeAdmissionDecided, Details: fmt.Appendf(nil, `{"i":%d}`, i)})
			if err != nil {
				return err
			}
			leaves[resp.GetEntry().GetIndex()] = resp.GetEntry().GetLeaf()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return leaves
}

// TestLedgerReadsVerify checks that entries and both kinds of proof, read
// by an ordinary member of the trust domain, verify against the checkpoint
// returned with them.
func TestLedgerReadsVerify(t *testing.T) {
	e := newEnv(t)
	leaves := appendEvents(t, e, 300) // more than one entry bundle
	c := e.client(t, "/builder/ci")
	ctx := t.Context()

	var got [][]byte
	var cp *tlog.Checkpoint
	for start := uint64(0); start < uint64(len(leaves)); {
		resp, err := c.GetEntries(ctx, &catalogv1.GetEntriesRequest{Start: start, PageSize: 128})
		if err != nil {
			t.Fatal(err)
		}
		if cp, err = tlog.OpenCheckpoint(resp.GetCheckpoint(), e.vkey); err != nil {
			t.Fatal(err)
		}
		if len(resp.GetEntries()) == 0 || len(resp.GetEntries()) > 128 {
			t.Fatalf("GetEntries(%d) returned %d entries", start, len(resp.GetEntries()))
		}
		got = append(got, resp.GetEntries()...)
		start += uint64(len(resp.GetEntries()))
	}
	if cp.Size != uint64(len(leaves)) {
		t.Fatalf("checkpoint size %d, want %d", cp.Size, len(leaves))
	}
	for i := range leaves {
		if string(got[i]) != string(leaves[i]) {
			t.Fatalf("entry %d = %q, want %q", i, got[i], leaves[i])
		}
	}

	for _, idx := range []uint64{0, 1, 255, 256, 299} {
		resp, err := c.GetInclusionProof(ctx, &catalogv1.GetInclusionProofRequest{Index: idx})
		if err != nil {
			t.Fatal(err)
		}
		pcp, err := tlog.OpenCheckpoint(resp.GetCheckpoint(), e.vkey)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetTreeSize() != pcp.Size || string(resp.GetLeaf()) != string(leaves[idx]) {
			t.Fatalf("inclusion of %d: tree size %d leaf %q", idx, resp.GetTreeSize(), resp.GetLeaf())
		}
		if err := tlog.VerifyInclusion(resp.GetLeaf(), idx, resp.GetInclusionProof(), pcp); err != nil {
			t.Errorf("inclusion of %d: %v", idx, err)
		}
	}

	// A checkpoint seen earlier is proved consistent with the latest one.
	older := &tlog.Checkpoint{Origin: origin, Size: 17, Hash: rootOf(leaves[:17])}
	resp, err := c.GetConsistencyProof(ctx, &catalogv1.GetConsistencyProofRequest{FirstSize: 17})
	if err != nil {
		t.Fatal(err)
	}
	newer, err := tlog.OpenCheckpoint(resp.GetCheckpoint(), e.vkey)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetSecondSize() != newer.Size {
		t.Fatalf("second size %d, checkpoint %d", resp.GetSecondSize(), newer.Size)
	}
	if err := tlog.VerifyConsistency(older, newer, resp.GetConsistencyProof()); err != nil {
		t.Errorf("consistency 17 → %d: %v", newer.Size, err)
	}
	// A forked history of the same size is not consistent with it.
	forked := &tlog.Checkpoint{Origin: origin, Size: 17, Hash: rootOf(append(append([][]byte{}, leaves[:16]...), []byte("forged")))}
	if err := tlog.VerifyConsistency(forked, newer, resp.GetConsistencyProof()); err == nil {
		t.Error("a forked checkpoint verified as consistent")
	}
	// Inclusion in an older tree size.
	inc, err := c.GetInclusionProof(ctx, &catalogv1.GetInclusionProofRequest{Index: 3, TreeSize: 17})
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.VerifyInclusion(inc.GetLeaf(), 3, inc.GetInclusionProof(), older); err != nil || inc.GetTreeSize() != 17 {
		t.Errorf("inclusion of 3 at size 17 (size %d): %v", inc.GetTreeSize(), err)
	}
	// Trivial consistency proofs are empty.
	for _, req := range []*catalogv1.GetConsistencyProofRequest{{FirstSize: 0}, {FirstSize: 300, SecondSize: 300}} {
		r, err := c.GetConsistencyProof(ctx, req)
		if err != nil || len(r.GetConsistencyProof()) != 0 {
			t.Errorf("GetConsistencyProof(%v) = %d hashes, %v; want an empty proof", req, len(r.GetConsistencyProof()), err)
		}
	}
}

// TestLedgerHostileInputs checks that indexes, sizes and page sizes outside
// the co-signed tree are InvalidArgument, and that nothing huge is read.
func TestLedgerHostileInputs(t *testing.T) {
	e := newEnv(t)
	appendEvents(t, e, 5)
	c := e.client(t, "/deployer/pipeline")
	ctx := t.Context()
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"entries past the end", func() error {
			_, err := c.GetEntries(ctx, &catalogv1.GetEntriesRequest{Start: 5})
			return err
		}, "has 5 entries"},
		{"entries at max uint64", func() error {
			_, err := c.GetEntries(ctx, &catalogv1.GetEntriesRequest{Start: ^uint64(0)})
			return err
		}, "start"},
		{"page too large", func() error {
			_, err := c.GetEntries(ctx, &catalogv1.GetEntriesRequest{PageSize: 1001})
			return err
		}, "page size"},
		{"negative page", func() error {
			_, err := c.GetEntries(ctx, &catalogv1.GetEntriesRequest{PageSize: -1})
			return err
		}, "page size"},
		{"inclusion index past the end", func() error {
			_, err := c.GetInclusionProof(ctx, &catalogv1.GetInclusionProofRequest{Index: 5})
			return err
		}, "not below tree size"},
		{"inclusion index not below tree size", func() error {
			_, err := c.GetInclusionProof(ctx, &catalogv1.GetInclusionProofRequest{Index: 3, TreeSize: 3})
			return err
		}, "not below tree size"},
		{"inclusion tree larger than the log", func() error {
			_, err := c.GetInclusionProof(ctx, &catalogv1.GetInclusionProofRequest{Index: 0, TreeSize: 1 << 62})
			return err
		}, "co-signed tree has 5"},
		{"consistency first after second", func() error {
			_, err := c.GetConsistencyProof(ctx, &catalogv1.GetConsistencyProofRequest{FirstSize: 4, SecondSize: 3})
			return err
		}, "larger than second"},
		{"consistency beyond the log", func() error {
			_, err := c.GetConsistencyProof(ctx, &catalogv1.GetConsistencyProofRequest{FirstSize: 1, SecondSize: ^uint64(0)})
			return err
		}, "co-signed tree has 5"},
		{"consistency first beyond the log", func() error {
			_, err := c.GetConsistencyProof(ctx, &catalogv1.GetConsistencyProofRequest{FirstSize: ^uint64(0)})
			return err
		}, "larger than second"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want InvalidArgument mentioning %q", err, tt.want)
			}
		})
	}
}

// TestLedgerAuthorization checks who may read the log: every member of the
// trust domain, whatever its role; a client of another trust domain is
// refused.
func TestLedgerAuthorization(t *testing.T) {
	e := newEnv(t)
	appendEvents(t, e, 2)
	for _, who := range []string{"/builder/ci", "/deployer/pipeline", "/auditor/audit", "/edge/dev", "/approver/alice", "/service/gatekeeper", "/admin/ops"} {
		c := e.client(t, who)
		if _, err := c.GetEntries(t.Context(), &catalogv1.GetEntriesRequest{}); err != nil {
			t.Errorf("%s GetEntries: %v", who, err)
		}
		if _, err := c.GetInclusionProof(t.Context(), &catalogv1.GetInclusionProofRequest{Index: 1}); err != nil {
			t.Errorf("%s GetInclusionProof: %v", who, err)
		}
		if _, err := c.GetConsistencyProof(t.Context(), &catalogv1.GetConsistencyProofRequest{FirstSize: 1}); err != nil {
			t.Errorf("%s GetConsistencyProof: %v", who, err)
		}
	}
	other := identitytest.New(t, "other.test")
	conn, err := rpc.Dial(e.addr, e.td.ID("/service/catalog"), other.Source(t, "/auditor/audit"), telemetry.Discard("client"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = catalogv1.NewCatalogServiceClient(conn).GetEntries(t.Context(), &catalogv1.GetEntriesRequest{})
	if code := status.Code(err); code == codes.OK || code == codes.InvalidArgument {
		t.Errorf("another trust domain's GetEntries: got %v, want refused", err)
	}
}

// rootOf returns the RFC 6962 root hash of a tree of leaves.
func rootOf(leaves [][]byte) []byte {
	tree := testonly.New(rfc6962.DefaultHasher)
	tree.AppendData(leaves...)
	return tree.Hash()
}
