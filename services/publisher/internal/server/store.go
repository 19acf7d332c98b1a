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
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

// StorePolicy is who may administer the blob store: admins only.
func StorePolicy(td spiffeid.TrustDomain) rpc.Policy {
	sd := publisherv1.StoreService_ServiceDesc
	return rpc.Policy{
		rpc.Method(sd, "RewrapKeys"): {rpc.Under{TrustDomain: td, Prefix: "/admin"}},
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
}

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
