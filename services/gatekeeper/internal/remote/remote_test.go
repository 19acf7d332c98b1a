package remote

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
)

// listClient answers ListPublicKeys and GetTrustRoot from fields.
type listClient struct {
	signerv1.SignerServiceClient
	keys  []*signerv1.PublicKey
	roots [][]byte
	after int64
}

func (c *listClient) ListPublicKeys(context.Context, *signerv1.ListPublicKeysRequest, ...grpc.CallOption) (*signerv1.ListPublicKeysResponse, error) {
	return &signerv1.ListPublicKeysResponse{Keys: c.keys}, nil
}

func (c *listClient) GetTrustRoot(_ context.Context, req *signerv1.GetTrustRootRequest, _ ...grpc.CallOption) (*signerv1.GetTrustRootResponse, error) {
	c.after = req.GetAfterVersion()
	return &signerv1.GetTrustRootResponse{Roots: c.roots}, nil
}

func TestRevocations(t *testing.T) {
	at := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	c := &listClient{keys: []*signerv1.PublicKey{
		{KeyId: "current", Status: signerv1.KeyStatus_KEY_STATUS_CURRENT},
		{KeyId: "retired", Status: signerv1.KeyStatus_KEY_STATUS_RETIRED, RevokedAt: timestamppb.New(at)},
		{KeyId: "revoked", Status: signerv1.KeyStatus_KEY_STATUS_REVOKED, RevokedAt: timestamppb.New(at)},
		{KeyId: "revoked-no-time", Status: signerv1.KeyStatus_KEY_STATUS_REVOKED},
		{Status: signerv1.KeyStatus_KEY_STATUS_REVOKED},
	}}
	got, err := NewSigner(c, slog.New(slog.DiscardHandler)).Revocations(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Time{"revoked": at, "revoked-no-time": time.Unix(0, 0).UTC()}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("revocations (-want +got):\n%s", diff)
	}
}

func TestTrustRoots(t *testing.T) {
	c := &listClient{roots: [][]byte{[]byte("v3"), []byte("v4")}}
	got, err := NewSigner(c, slog.New(slog.DiscardHandler)).TrustRoots(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if c.after != 2 || len(got) != 2 || string(got[1]) != "v4" {
		t.Errorf("TrustRoots asked after v%d, got %q", c.after, got)
	}
}
