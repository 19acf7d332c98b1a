package server

import (
	"context"
	"errors"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/services/gatekeeper/internal/rollback"
)

// WithRollbacks serves the rollback RPCs from rb. Without it they fail
// with Unavailable.
func (s *Server) WithRollbacks(rb *rollback.Store) *Server {
	s.rb = rb
	return s
}

func (s *Server) rollbackCaller(ctx context.Context) (string, error) {
	id, ok := rpc.CallerID(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no SPIFFE ID: connect with mTLS and an X.509-SVID")
	}
	if s.rb == nil {
		return "", status.Error(codes.Unavailable, "rollback approvals not configured on this gatekeeper")
	}
	return id.String(), nil
}

// RequestRollback asks for a rollback approval; see the proto.
func (s *Server) RequestRollback(ctx context.Context, req *gatekeeperv1.RequestRollbackRequest) (*gatekeeperv1.RequestRollbackResponse, error) {
	id, err := s.rollbackCaller(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.rb.Request(ctx, req.GetName(), req.GetFromVersion(), req.GetToVersion(), req.GetEnvironment(), req.GetReason(), id)
	if err != nil {
		return nil, s.rollbackStatus(ctx, "RequestRollback", err)
	}
	return &gatekeeperv1.RequestRollbackResponse{Rollback: protoRollback(res.Request), LogIndex: res.LogIndex}, nil
}

// ApproveRollback approves a rollback request; see the proto.
func (s *Server) ApproveRollback(ctx context.Context, req *gatekeeperv1.ApproveRollbackRequest) (*gatekeeperv1.ApproveRollbackResponse, error) {
	id, err := s.rollbackCaller(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.rb.Approve(ctx, req.GetId(), id)
	if err != nil {
		return nil, s.rollbackStatus(ctx, "ApproveRollback", err)
	}
	return &gatekeeperv1.ApproveRollbackResponse{Rollback: protoRollback(res.Request), LogIndex: res.LogIndex}, nil
}

// ListRollbacks returns the unexpired rollback requests; see the proto.
func (s *Server) ListRollbacks(ctx context.Context, _ *gatekeeperv1.ListRollbacksRequest) (*gatekeeperv1.ListRollbacksResponse, error) {
	if _, err := s.rollbackCaller(ctx); err != nil {
		return nil, err
	}
	out := &gatekeeperv1.ListRollbacksResponse{}
	for _, r := range s.rb.List() {
		out.Rollbacks = append(out.Rollbacks, protoRollback(r))
	}
	return out, nil
}

func protoRollback(r rollback.Request) *gatekeeperv1.Rollback {
	return &gatekeeperv1.Rollback{
		Id: r.ID, Name: r.Name, FromVersion: r.From, ToVersion: r.To, Environment: r.Environment, Reason: r.Reason,
		RequestedBy: r.RequestedBy, RequestedAt: timestamppb.New(r.RequestedAt), ExpiresAt: timestamppb.New(r.ExpiresAt),
		Approvals: r.Approvals, Quorum: int32(r.Quorum), Granted: r.Granted(),
	}
}

// rollbackStatus maps rollback errors to status codes.
func (s *Server) rollbackStatus(ctx context.Context, method string, err error) error {
	traceID := trace.SpanContextFromContext(ctx).TraceID().String()
	switch {
	case errors.Is(err, rollback.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, rollback.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, rollback.ErrRefused):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, rollback.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		s.logger.WarnContext(ctx, "rollback change incomplete", slog.String("method", method), slog.String("trace_id", traceID), slog.Any("error", err))
		return status.Errorf(codes.Unavailable, "the rollback request or approval could not be logged or saved, so it does not count; retry (trace %s)", traceID)
	default:
		s.logger.ErrorContext(ctx, "internal error", slog.String("method", method), slog.String("trace_id", traceID), slog.Any("error", err))
		return status.Errorf(codes.Internal, "internal error (trace %s)", traceID)
	}
}
