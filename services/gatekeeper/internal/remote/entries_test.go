package remote

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
)

// entriesClient serves a log of size leaves as the catalog's Ledger does:
// GetEntries refuses a start at or past the size as InvalidArgument.
type entriesClient struct {
	catalogv1.CatalogServiceClient
	leaves     [][]byte
	checkpoint []byte // served with the entries; nil: none (a broken catalog)
	latest     []byte // GetCheckpoint's
}

func (c *entriesClient) GetEntries(_ context.Context, req *catalogv1.GetEntriesRequest, _ ...grpc.CallOption) (*catalogv1.GetEntriesResponse, error) {
	if req.GetPageSize() != entriesPage {
		return nil, status.Errorf(codes.InvalidArgument, "page size %d", req.GetPageSize())
	}
	if req.GetStart() >= uint64(len(c.leaves)) {
		return nil, status.Error(codes.InvalidArgument, "start past the co-signed tree")
	}
	return &catalogv1.GetEntriesResponse{Entries: c.leaves[req.GetStart():], Checkpoint: c.checkpoint}, nil
}

func (c *entriesClient) GetCheckpoint(context.Context, *catalogv1.GetCheckpointRequest, ...grpc.CallOption) (*catalogv1.GetCheckpointResponse, error) {
	return &catalogv1.GetCheckpointResponse{Checkpoint: c.latest}, nil
}

// TestEntriesCarryTheCheckpoint: entries come with the checkpoint served
// with them; at the end of the tree, with GetCheckpoint's, so that the
// caller can prove it is caught up; entries without a checkpoint are an
// error, not leaves to act on.
func TestEntriesCarryTheCheckpoint(t *testing.T) {
	c := &entriesClient{leaves: [][]byte{[]byte("a"), []byte("b")}, checkpoint: []byte("cp 2"), latest: []byte("cp latest")}
	leaves, cp, err := NewCatalog(c).Entries(t.Context(), 1)
	if err != nil || len(leaves) != 1 || string(leaves[0]) != "b" || string(cp) != "cp 2" {
		t.Fatalf("Entries(1) = %q, %q, %v; want [b] with the page's checkpoint", leaves, cp, err)
	}
	leaves, cp, err = NewCatalog(c).Entries(t.Context(), 2)
	if err != nil || len(leaves) != 0 || string(cp) != "cp latest" {
		t.Fatalf("Entries(2) = %q, %q, %v; want no leaves and GetCheckpoint's checkpoint", leaves, cp, err)
	}
	c.latest = nil
	if _, _, err := NewCatalog(c).Entries(t.Context(), 2); err == nil {
		t.Fatal("caught up with no checkpoint served: no error")
	}
	c.checkpoint = nil
	if leaves, _, err := NewCatalog(c).Entries(t.Context(), 0); err == nil {
		t.Fatalf("entries without a checkpoint: %q and no error", leaves)
	}
}
