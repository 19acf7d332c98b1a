package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/services/publisher/internal/retention"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

// StorePolicy is who may administer the blob store: admins only.
func StorePolicy(td spiffeid.TrustDomain) rpc.Policy {
	sd := publisherv1.StoreService_ServiceDesc
	return rpc.Policy{
		rpc.Method(sd, "RewrapKeys"):   {rpc.Under{TrustDomain: td, Prefix: "/admin"}},
		rpc.Method(sd, "RunRetention"): {rpc.Under{TrustDomain: td, Prefix: "/admin"}},
	}
}

// Rewrapper re-wraps every data key under the newest KEK version.
type Rewrapper interface {
	Rewrap(ctx context.Context) (sealed.RewrapResult, error)
}

var _ Rewrapper = (*sealed.Store)(nil)

// Store implements publisherv1.StoreServiceServer.
type Store struct {
	publisherv1.UnimplementedStoreServiceServer
	blobs  Rewrapper
	logger *slog.Logger
	mu     sync.Mutex // one rewrap at a time
	ret    *retention.Runner
}

// SetRetention serves RunRetention with r. Call it before serving.
func (s *Store) SetRetention(r *retention.Runner) { s.ret = r }

// NewStore returns the store administration API.
func NewStore(blobs Rewrapper, logger *slog.Logger) *Store {
	return &Store{blobs: blobs, logger: logger}
}

var errBusy = errors.New("a rewrap is already running")

// RewrapKeys implements publisherv1.StoreServiceServer.
func (s *Store) RewrapKeys(ctx context.Context, _ *publisherv1.RewrapKeysRequest) (*publisherv1.RewrapKeysResponse, error) {
	if !s.mu.TryLock() {
		return nil, status.Error(codes.FailedPrecondition, errBusy.Error()+": wait for it to finish, then check its result")
	}
	defer s.mu.Unlock()
	caller, _ := rpc.CallerID(ctx)
	// The run outlives a client that gives up: stopping halfway is safe,
	// but finishing is what the caller wants.
	res, err := s.blobs.Rewrap(context.WithoutCancel(ctx))
	s.logger.InfoContext(ctx, "rewrap keys", slog.String("caller", caller.String()),
		slog.Int("rewrapped", res.Rewrapped), slog.Int("failed", res.Failed), slog.Any("error", err))
	resp := &publisherv1.RewrapKeysResponse{Rewrapped: int64(res.Rewrapped), Failed: int64(res.Failed)}
	if errors.Is(err, sealed.ErrUnavailable) {
		return nil, toStatus(fmt.Errorf("%w: rewrapped %d keys before stopping; run it again once the KEK back end is back", err, res.Rewrapped))
	}
	// Per-record failures are counted in the response; details are in
	// the log.
	return resp, nil
}

// RunRetention implements publisherv1.StoreServiceServer.
func (s *Store) RunRetention(ctx context.Context, req *publisherv1.RunRetentionRequest) (*publisherv1.RunRetentionResponse, error) {
	caller, _ := rpc.CallerID(ctx)
	if s.ret == nil {
		return nil, toStatus(fmt.Errorf("%w: start the publisher with --retention-policy", retention.ErrNoPolicy))
	}
	// Like a rewrap, a run outlives a client that gives up.
	res, err := s.ret.Run(context.WithoutCancel(ctx), req.GetDryRun())
	attrs := []any{slog.String("caller", caller.String()), slog.Bool("dry_run", req.GetDryRun()), slog.Any("error", err)}
	if res != nil {
		attrs = append(attrs, slog.Int("deleted", len(res.Deleted)), slog.Int("kept", len(res.Kept)))
	}
	s.logger.InfoContext(ctx, "retention run", attrs...)
	if err != nil {
		if errors.Is(err, retention.ErrNoPolicy) || errors.Is(err, retention.ErrBusy) || errors.Is(err, retention.ErrUnavailable) {
			return nil, toStatus(err)
		}
		s.logger.ErrorContext(ctx, "retention run failed", slog.Any("error", err))
		return nil, status.Error(codes.Internal, "retention run failed: see the publisher log; what was deleted is journalled and finished by the next run")
	}
	resp := &publisherv1.RunRetentionResponse{DryRun: res.DryRun, DeletedCount: int64(len(res.Deleted)), KeptCount: int64(len(res.Kept))}
	for _, it := range res.Deleted {
		s.logger.InfoContext(ctx, "retention selected", slog.String("name", it.Name), slog.String("version", it.Version),
			slog.String("digest", it.Digest), slog.String("reason", it.Reason), slog.Bool("dry_run", res.DryRun))
	}
	for _, it := range res.Deleted[:min(len(res.Deleted), maxReported)] {
		resp.Deleted = append(resp.Deleted, item(it))
	}
	for _, it := range res.Kept[:min(len(res.Kept), maxReported)] {
		resp.Kept = append(resp.Kept, item(it))
	}
	return resp, nil
}

// maxReported bounds the items of each list in a RunRetention response,
// so a large run's answer stays well within a message.
const maxReported = 1000

func item(it retention.Item) *publisherv1.RetentionItem {
	return &publisherv1.RetentionItem{Name: it.Name, Version: it.Version, Digest: it.Digest, Channel: it.Channel, Reason: it.Reason, BlobDestroyed: it.BlobDestroyed}
}
