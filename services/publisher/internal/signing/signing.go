// Package signing gathers the publisher's concurrent signing requests into
// SignArtifacts batches, so that a busy publisher pays the signer one round
// trip per batch instead of one per artifact.
package signing

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/batch"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
)

// Defaults for New: two calls outstanding, batches of up to 64 statements
// (see docs/decisions/0015-batched-signing.md).
const (
	MaxInFlight = 2
	MaxBatch    = 64
)

// Client is the part of the signer API the batcher uses.
type Client interface {
	SignArtifact(ctx context.Context, in *signerv1.SignArtifactRequest, opts ...grpc.CallOption) (*signerv1.SignArtifactResponse, error)
	SignArtifacts(ctx context.Context, in *signerv1.SignArtifactsRequest, opts ...grpc.CallOption) (*signerv1.SignArtifactsResponse, error)
}

// Batcher signs through Client in batches (libs/batch: no timer). A request
// on a channel that needs approvals is refused by SignArtifacts and sent
// again through SignArtifact, which waits for them. It is safe for
// concurrent use.
type Batcher struct {
	client Client
	q      *batch.Queue[*signerv1.SignArtifactRequest, result]
}

// result is one statement's outcome within a batch.
type result struct {
	resp *signerv1.SignArtifactResponse
	err  error
}

// New returns a batcher of at most maxBatch statements per call (the
// signer accepts 256) and maxInFlight outstanding calls.
func New(c Client, maxInFlight, maxBatch int) *Batcher {
	b := &Batcher{client: c}
	b.q = batch.New(maxInFlight, min(max(1, maxBatch), 256), b.send)
	return b
}

// SignArtifact signs one statement, in a batch with whatever else is
// waiting. Errors are gRPC status errors, as from the signer.
func (b *Batcher) SignArtifact(ctx context.Context, req *signerv1.SignArtifactRequest) (*signerv1.SignArtifactResponse, error) {
	r, err := b.q.Do(ctx, req)
	if err == nil {
		err = r.err
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, status.FromContextError(err).Err()
	case status.Code(err) == codes.FailedPrecondition, status.Code(err) == codes.Unimplemented:
		// Needs approvals (or an older signer): the unary call waits.
		return b.client.SignArtifact(ctx, req)
	case errors.Is(err, batch.ErrShort):
		return nil, status.Error(codes.Internal, "the signer returned a result count other than the statement count")
	}
	return r.resp, err
}

func (b *Batcher) send(ctx context.Context, items []*signerv1.SignArtifactRequest) ([]result, error) {
	resp, err := b.client.SignArtifacts(ctx, &signerv1.SignArtifactsRequest{Items: items})
	if err != nil {
		return nil, err
	}
	out := make([]result, len(resp.GetResults()))
	for i, res := range resp.GetResults() {
		if res.GetCode() != int32(codes.OK) {
			out[i].err = status.Error(codes.Code(res.GetCode()), res.GetMessage())
		} else {
			out[i].resp = &signerv1.SignArtifactResponse{Envelope: res.GetEnvelope(), KeyId: res.GetKeyId()}
		}
	}
	return out, nil
}
