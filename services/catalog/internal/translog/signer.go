package translog

import (
	"context"
	"fmt"
	"math"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
)

// SignerClient is the signer's co-signing API as a Cosigner.
type SignerClient struct {
	client signerv1.SignerServiceClient
	addr   string
}

var _ Cosigner = (*SignerClient)(nil)

// NewSignerClient returns a Cosigner calling the signer at addr (used in
// messages) through client.
func NewSignerClient(client signerv1.SignerServiceClient, addr string) *SignerClient {
	return &SignerClient{client: client, addr: addr}
}

// Cosigned implements Cosigner with GetCosignedCheckpoint.
func (s *SignerClient) Cosigned(ctx context.Context, origin string) ([]byte, error) {
	resp, err := s.client.GetCosignedCheckpoint(ctx, &signerv1.GetCosignedCheckpointRequest{Origin: origin})
	if err != nil {
		return nil, s.err("get the last co-signed checkpoint", err)
	}
	return resp.GetCheckpoint(), nil
}

// Cosign implements Cosigner with CosignCheckpoint.
func (s *SignerClient) Cosign(ctx context.Context, checkpoint []byte, fromSize uint64, proof [][]byte) ([]byte, error) {
	if fromSize > math.MaxInt64 {
		return nil, fmt.Errorf("co-sign checkpoint: from size %d out of range", fromSize)
	}
	resp, err := s.client.CosignCheckpoint(ctx, &signerv1.CosignCheckpointRequest{
		Checkpoint: checkpoint, FromSize: int64(fromSize), ConsistencyProof: proof,
	})
	if err != nil {
		return nil, s.err("co-sign checkpoint", err)
	}
	return resp.GetCheckpoint(), nil
}

// err names the signer and says what to check.
func (s *SignerClient) err(what string, err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.FailedPrecondition:
		return fmt.Errorf("%w: signer at %s: %s", ErrRefused, s.addr, st.Message())
	case codes.PermissionDenied, codes.Unauthenticated:
		return fmt.Errorf("%s: signer at %s refuses this catalog (%s): check that it runs as spiffe://<td>/service/catalog", what, s.addr, st.Message())
	}
	return fmt.Errorf("%s: signer at %s: %s: %s", what, s.addr, st.Code(), st.Message())
}
