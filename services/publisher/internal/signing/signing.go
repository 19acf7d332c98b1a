// Package signing gathers the publisher's concurrent signing requests into
// SignArtifacts batches, so that a busy publisher pays the signer one round
// trip per batch instead of one per artifact.
package signing

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// Batcher signs through Client. Nothing waits on a timer: a request goes
// out at once while fewer than maxInFlight batches are outstanding, and
// otherwise joins the next batch. A request on a channel that needs
// approvals is refused by SignArtifacts and sent again through
// SignArtifact, which waits for them. It is safe for concurrent use.
type Batcher struct {
	client      Client
	maxInFlight int
	maxBatch    int

	mu       sync.Mutex
	inFlight int
	pending  []*request
}

type request struct {
	ctx  context.Context
	req  *signerv1.SignArtifactRequest
	resp *signerv1.SignArtifactResponse
	err  error
	done chan struct{}
}

// New returns a batcher of at most maxBatch statements per call (the
// signer accepts 256) and maxInFlight outstanding calls.
func New(c Client, maxInFlight, maxBatch int) *Batcher {
	return &Batcher{client: c, maxInFlight: max(1, maxInFlight), maxBatch: min(max(1, maxBatch), 256)}
}

// SignArtifact signs one statement, in a batch with whatever else is
// waiting. Errors are gRPC status errors, as from the signer.
func (b *Batcher) SignArtifact(ctx context.Context, req *signerv1.SignArtifactRequest) (*signerv1.SignArtifactResponse, error) {
	r := &request{ctx: ctx, req: req, done: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, r)
	b.dispatchLocked()
	b.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if status.Code(r.err) == codes.FailedPrecondition || status.Code(r.err) == codes.Unimplemented {
		// Needs approvals (or an older signer): the unary call waits.
		return b.client.SignArtifact(ctx, req)
	}
	return r.resp, r.err
}

func (b *Batcher) dispatchLocked() {
	for b.inFlight < b.maxInFlight && len(b.pending) > 0 {
		n := min(len(b.pending), b.maxBatch)
		batch := b.pending[:n:n]
		b.pending = b.pending[n:]
		b.inFlight++
		go b.run(batch)
	}
}

func (b *Batcher) run(batch []*request) {
	live := batch[:0]
	for _, r := range batch {
		if r.ctx.Err() == nil {
			live = append(live, r)
		} else {
			close(r.done)
		}
	}
	if len(live) > 0 {
		items := make([]*signerv1.SignArtifactRequest, len(live))
		for i, r := range live {
			items[i] = r.req
		}
		// The batch outlives any one caller: their values, not their
		// cancellation.
		resp, err := b.client.SignArtifacts(context.WithoutCancel(live[0].ctx), &signerv1.SignArtifactsRequest{Items: items})
		if err == nil && len(resp.GetResults()) != len(live) {
			err = status.Errorf(codes.Internal, "signer returned %d results for %d statements", len(resp.GetResults()), len(live))
		}
		for i, r := range live {
			switch {
			case err != nil:
				r.err = err
			case resp.GetResults()[i].GetCode() != int32(codes.OK):
				res := resp.GetResults()[i]
				r.err = status.Error(codes.Code(res.GetCode()), res.GetMessage())
			default:
				res := resp.GetResults()[i]
				r.resp = &signerv1.SignArtifactResponse{Envelope: res.GetEnvelope(), KeyId: res.GetKeyId()}
			}
			close(r.done)
		}
	}
	b.mu.Lock()
	b.inFlight--
	b.dispatchLocked()
	b.mu.Unlock()
}
