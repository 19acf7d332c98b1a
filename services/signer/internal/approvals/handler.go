package approvals

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

// Handler is the ApprovalService API over a Service. Who may call which
// method is server.Policy; Service checks the approver group itself.
type Handler struct {
	signerv1.UnimplementedApprovalServiceServer
	svc    *Service
	logger *slog.Logger
}

var _ signerv1.ApprovalServiceServer = (*Handler)(nil)

// NewHandler returns the API of svc.
func NewHandler(svc *Service, logger *slog.Logger) *Handler {
	return &Handler{svc: svc, logger: logger}
}

// ListApprovalRequests lists pending requests, or all kept ones.
func (h *Handler) ListApprovalRequests(_ context.Context, req *signerv1.ListApprovalRequestsRequest) (*signerv1.ListApprovalRequestsResponse, error) {
	resp := &signerv1.ListApprovalRequestsResponse{}
	for _, r := range h.svc.List(req.GetAll()) {
		resp.Requests = append(resp.Requests, toProto(r))
	}
	return resp, nil
}

// Approve records the caller's approval.
func (h *Handler) Approve(ctx context.Context, req *signerv1.ApproveRequest) (*signerv1.ApproveResponse, error) {
	caller, ok := rpc.CallerID(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer identity")
	}
	r, err := h.svc.Approve(ctx, req.GetId(), caller)
	if err != nil {
		return nil, h.toStatus(ctx, err)
	}
	return &signerv1.ApproveResponse{Request: toProto(r)}, nil
}

// Reject ends a request with the caller's reason.
func (h *Handler) Reject(ctx context.Context, req *signerv1.RejectRequest) (*signerv1.RejectResponse, error) {
	caller, ok := rpc.CallerID(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer identity")
	}
	r, err := h.svc.Reject(ctx, req.GetId(), caller, req.GetReason())
	if err != nil {
		return nil, h.toStatus(ctx, err)
	}
	return &signerv1.RejectResponse{Request: toProto(r)}, nil
}

func toProto(r Request) *signerv1.ApprovalRequest {
	p := &signerv1.ApprovalRequest{
		Id: r.ID, Name: r.Name, Version: r.Version, Digest: r.Digest, Channel: r.Channel, KeyName: r.KeyName,
		BuilderId: r.BuilderID, SourceRepo: r.SourceRepo, SourceCommit: r.SourceCommit, State: stateProto(r.State),
		Quorum: int32(r.Quorum), CreatedAt: timestamppb.New(r.CreatedAt), ExpiresAt: timestamppb.New(r.ExpiresAt),
		RejectedBy: r.RejectedBy, RejectReason: r.RejectReason,
	}
	for _, a := range r.Approvals {
		p.Approvals = append(p.Approvals, &signerv1.Approval{Approver: a.Approver, ApprovedAt: timestamppb.New(a.ApprovedAt), ExpiresAt: timestamppb.New(a.ExpiresAt)})
	}
	return p
}

func stateProto(s State) signerv1.ApprovalState {
	switch s {
	case Pending:
		return signerv1.ApprovalState_APPROVAL_STATE_PENDING
	case Approved:
		return signerv1.ApprovalState_APPROVAL_STATE_APPROVED
	case Rejected:
		return signerv1.ApprovalState_APPROVAL_STATE_REJECTED
	case Expired:
		return signerv1.ApprovalState_APPROVAL_STATE_EXPIRED
	case Signed:
		return signerv1.ApprovalState_APPROVAL_STATE_SIGNED
	}
	return signerv1.ApprovalState_APPROVAL_STATE_UNSPECIFIED
}

// toStatus is the one mapping from the service's errors to gRPC codes.
func (h *Handler) toStatus(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrClosed):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, server.ErrApprovalsUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	}
	h.logger.ErrorContext(ctx, "approval request failed", slog.Any("error", err))
	return status.Error(codes.Internal, "internal error")
}
