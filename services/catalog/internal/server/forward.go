package server

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/rpc"
)

// WriterFunc returns a client of the current log writer (0070).
type WriterFunc func(ctx context.Context) (catalogv1.CatalogServiceClient, error)

// Follower serves a catalog that does not hold the log-writer lease: the
// reads of the store (artifacts, search, events, lineage) from its own
// Server over the shared PostgreSQL database, and the writes and the log
// reads (checkpoint, entries, proofs) by forwarding them to the writer, on
// behalf of the caller that this follower has authenticated and that the
// policy interceptor has authorized.
type Follower struct {
	*Server
	writer WriterFunc
}

var _ catalogv1.CatalogServiceServer = (*Follower)(nil)

// NewFollower returns a follower serving reads from local (a Server built
// WithForwarding, over a catalog without a log) and forwarding to writer.
func NewFollower(local *Server, writer WriterFunc) *Follower {
	return &Follower{Server: local, writer: writer}
}

// forward returns the writer's client and the context for a call to it,
// carrying only the authenticated caller's ID.
func (f *Follower) forward(ctx context.Context) (catalogv1.CatalogServiceClient, context.Context, error) {
	actor, err := f.caller(ctx)
	if err != nil {
		return nil, nil, err
	}
	if f.forwarded(ctx) {
		// Followers forward to the writer only, never to each other: a
		// forwarded call here followed an address out of date (the
		// writer died and this process took its port). The caller
		// retries and reaches the new writer.
		return nil, nil, status.Error(codes.Unavailable, "this catalog is a follower, not the log writer: retry")
	}
	c, err := f.writer(ctx)
	if err != nil {
		return nil, nil, status.Errorf(codes.Unavailable, "this catalog is a follower and cannot reach the log writer: %v; retry", err)
	}
	// A fresh outgoing context: nothing the caller sent is passed on but
	// the request itself.
	return c, metadata.NewOutgoingContext(ctx, metadata.Pairs(OnBehalfOfHeader, actor)), nil
}

// forwarded reports whether the call is one forwarded by a catalog (its
// own ID, with OnBehalfOfHeader); from anyone else the header is refused by
// caller.
func (f *Follower) forwarded(ctx context.Context) bool {
	id, _ := rpc.CallerID(ctx)
	_, has, _ := onBehalfOf(ctx)
	return has && !f.self.IsZero() && id == f.self
}

// RecordArtifact forwards to the writer.
func (f *Follower) RecordArtifact(ctx context.Context, req *catalogv1.RecordArtifactRequest) (*catalogv1.RecordArtifactResponse, error) {
	c, ctx, err := f.forward(ctx)
	if err != nil {
		return nil, err
	}
	return c.RecordArtifact(ctx, req)
}

// AppendEvent forwards to the writer.
func (f *Follower) AppendEvent(ctx context.Context, req *catalogv1.AppendEventRequest) (*catalogv1.AppendEventResponse, error) {
	c, ctx, err := f.forward(ctx)
	if err != nil {
		return nil, err
	}
	return c.AppendEvent(ctx, req)
}

// AppendEvents forwards to the writer.
func (f *Follower) AppendEvents(ctx context.Context, req *catalogv1.AppendEventsRequest) (*catalogv1.AppendEventsResponse, error) {
	c, ctx, err := f.forward(ctx)
	if err != nil {
		return nil, err
	}
	return c.AppendEvents(ctx, req)
}

// RecordDeployment forwards to the writer.
func (f *Follower) RecordDeployment(ctx context.Context, req *catalogv1.RecordDeploymentRequest) (*catalogv1.RecordDeploymentResponse, error) {
	c, ctx, err := f.forward(ctx)
	if err != nil {
		return nil, err
	}
	return c.RecordDeployment(ctx, req)
}

// RecordSignature forwards to the writer.
func (f *Follower) RecordSignature(ctx context.Context, req *catalogv1.RecordSignatureRequest) (*catalogv1.RecordSignatureResponse, error) {
	c, ctx, err := f.forward(ctx)
	if err != nil {
		return nil, err
	}
	return c.RecordSignature(ctx, req)
}

// readWriter returns the writer's client for a log read, which needs no
// actor: the follower's own ID asks.
func (f *Follower) readWriter(ctx context.Context) (catalogv1.CatalogServiceClient, context.Context, error) {
	c, err := f.writer(ctx)
	if err != nil {
		return nil, nil, status.Errorf(codes.Unavailable, "this catalog is a follower and cannot reach the log writer: %v; retry", err)
	}
	return c, metadata.NewOutgoingContext(ctx, metadata.MD{}), nil
}

// GetCheckpoint forwards to the writer, which holds the log.
func (f *Follower) GetCheckpoint(ctx context.Context, req *catalogv1.GetCheckpointRequest) (*catalogv1.GetCheckpointResponse, error) {
	c, ctx, err := f.readWriter(ctx)
	if err != nil {
		return nil, err
	}
	return c.GetCheckpoint(ctx, req)
}

// GetEntries forwards to the writer.
func (f *Follower) GetEntries(ctx context.Context, req *catalogv1.GetEntriesRequest) (*catalogv1.GetEntriesResponse, error) {
	c, ctx, err := f.readWriter(ctx)
	if err != nil {
		return nil, err
	}
	return c.GetEntries(ctx, req)
}

// GetInclusionProof forwards to the writer.
func (f *Follower) GetInclusionProof(ctx context.Context, req *catalogv1.GetInclusionProofRequest) (*catalogv1.GetInclusionProofResponse, error) {
	c, ctx, err := f.readWriter(ctx)
	if err != nil {
		return nil, err
	}
	return c.GetInclusionProof(ctx, req)
}

// GetConsistencyProof forwards to the writer.
func (f *Follower) GetConsistencyProof(ctx context.Context, req *catalogv1.GetConsistencyProofRequest) (*catalogv1.GetConsistencyProofResponse, error) {
	c, ctx, err := f.readWriter(ctx)
	if err != nil {
		return nil, err
	}
	return c.GetConsistencyProof(ctx, req)
}

// Switch serves whichever server is current: a catalog starts as a
// follower and switches to writer when it takes the lease.
type Switch struct {
	// Unsafe, not Unimplemented: an RPC added to the service and not
	// passed on here fails to compile instead of answering Unimplemented.
	catalogv1.UnsafeCatalogServiceServer
	cur atomic.Pointer[catalogv1.CatalogServiceServer]
}

var _ catalogv1.CatalogServiceServer = (*Switch)(nil)

// NewSwitch returns a Switch serving s.
func NewSwitch(s catalogv1.CatalogServiceServer) *Switch {
	w := &Switch{}
	w.Set(s)
	return w
}

// Set makes s the server for calls from now on.
func (w *Switch) Set(s catalogv1.CatalogServiceServer) { w.cur.Store(&s) }

func (w *Switch) get() catalogv1.CatalogServiceServer { return *w.cur.Load() }

func (w *Switch) RecordArtifact(ctx context.Context, r *catalogv1.RecordArtifactRequest) (*catalogv1.RecordArtifactResponse, error) {
	return w.get().RecordArtifact(ctx, r)
}

func (w *Switch) AppendEvent(ctx context.Context, r *catalogv1.AppendEventRequest) (*catalogv1.AppendEventResponse, error) {
	return w.get().AppendEvent(ctx, r)
}

func (w *Switch) AppendEvents(ctx context.Context, r *catalogv1.AppendEventsRequest) (*catalogv1.AppendEventsResponse, error) {
	return w.get().AppendEvents(ctx, r)
}

func (w *Switch) GetArtifact(ctx context.Context, r *catalogv1.GetArtifactRequest) (*catalogv1.GetArtifactResponse, error) {
	return w.get().GetArtifact(ctx, r)
}

func (w *Switch) GetCheckpoint(ctx context.Context, r *catalogv1.GetCheckpointRequest) (*catalogv1.GetCheckpointResponse, error) {
	return w.get().GetCheckpoint(ctx, r)
}

func (w *Switch) RecordSignature(ctx context.Context, r *catalogv1.RecordSignatureRequest) (*catalogv1.RecordSignatureResponse, error) {
	return w.get().RecordSignature(ctx, r)
}

func (w *Switch) RecordDeployment(ctx context.Context, r *catalogv1.RecordDeploymentRequest) (*catalogv1.RecordDeploymentResponse, error) {
	return w.get().RecordDeployment(ctx, r)
}

func (w *Switch) ListArtifacts(ctx context.Context, r *catalogv1.ListArtifactsRequest) (*catalogv1.ListArtifactsResponse, error) {
	return w.get().ListArtifacts(ctx, r)
}

func (w *Switch) GetEntries(ctx context.Context, r *catalogv1.GetEntriesRequest) (*catalogv1.GetEntriesResponse, error) {
	return w.get().GetEntries(ctx, r)
}

func (w *Switch) GetInclusionProof(ctx context.Context, r *catalogv1.GetInclusionProofRequest) (*catalogv1.GetInclusionProofResponse, error) {
	return w.get().GetInclusionProof(ctx, r)
}

func (w *Switch) GetConsistencyProof(ctx context.Context, r *catalogv1.GetConsistencyProofRequest) (*catalogv1.GetConsistencyProofResponse, error) {
	return w.get().GetConsistencyProof(ctx, r)
}

func (w *Switch) SearchArtifacts(ctx context.Context, r *catalogv1.SearchArtifactsRequest) (*catalogv1.SearchArtifactsResponse, error) {
	return w.get().SearchArtifacts(ctx, r)
}

func (w *Switch) ListEvents(ctx context.Context, r *catalogv1.ListEventsRequest) (*catalogv1.ListEventsResponse, error) {
	return w.get().ListEvents(ctx, r)
}

func (w *Switch) GetLineage(ctx context.Context, r *catalogv1.GetLineageRequest) (*catalogv1.GetLineageResponse, error) {
	return w.get().GetLineage(ctx, r)
}

func (w *Switch) GetLineagePath(ctx context.Context, r *catalogv1.GetLineagePathRequest) (*catalogv1.GetLineagePathResponse, error) {
	return w.get().GetLineagePath(ctx, r)
}
