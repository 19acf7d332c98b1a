package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/attest"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/trustroot"
)

// Handler is the KeyService API over a Manager.
type Handler struct {
	signerv1.UnimplementedKeyServiceServer
	m *Manager
}

var _ signerv1.KeyServiceServer = (*Handler)(nil)

// NewHandler returns the KeyService API of m.
func NewHandler(m *Manager) *Handler { return &Handler{m: m} }

// ListKeys implements signerv1.KeyServiceServer.
func (h *Handler) ListKeys(ctx context.Context, _ *signerv1.ListKeysRequest) (*signerv1.ListKeysResponse, error) {
	infos, err := h.m.List(ctx)
	if err != nil {
		return nil, h.status(ctx, err)
	}
	resp := &signerv1.ListKeysResponse{}
	for _, in := range infos {
		resp.Keys = append(resp.Keys, PublicKeyProto(in))
	}
	return resp, nil
}

// RotateKey implements signerv1.KeyServiceServer.
func (h *Handler) RotateKey(ctx context.Context, req *signerv1.RotateKeyRequest) (*signerv1.RotateKeyResponse, error) {
	caller, _ := rpc.CallerID(ctx)
	in, rv, err := h.m.Rotate(ctx, req.GetName(), caller.String())
	if err != nil {
		return nil, h.status(ctx, err)
	}
	return &signerv1.RotateKeyResponse{Key: PublicKeyProto(in), TrustRootVersion: rv}, nil
}

// RevokeKeyVersion implements signerv1.KeyServiceServer.
func (h *Handler) RevokeKeyVersion(ctx context.Context, req *signerv1.RevokeKeyVersionRequest) (*signerv1.RevokeKeyVersionResponse, error) {
	caller, _ := rpc.CallerID(ctx)
	var at time.Time
	if req.GetEffectiveAt() != nil {
		at = req.GetEffectiveAt().AsTime()
	}
	in, rv, err := h.m.Revoke(ctx, req.GetName(), int(req.GetVersion()), at, req.GetReason(), caller.String())
	if err != nil {
		return nil, h.status(ctx, err)
	}
	return &signerv1.RevokeKeyVersionResponse{Key: PublicKeyProto(in), TrustRootVersion: rv}, nil
}

// DraftTrustRoot implements signerv1.KeyServiceServer.
func (h *Handler) DraftTrustRoot(ctx context.Context, _ *signerv1.DraftTrustRootRequest) (*signerv1.DraftTrustRootResponse, error) {
	r, err := h.m.Draft(ctx)
	if err != nil {
		return nil, h.status(ctx, err)
	}
	// A first root outside development has no root keys yet: the
	// ceremony adds them, so the draft is not validated here.
	b, err := marshalDraft(r)
	if err != nil {
		return nil, h.status(ctx, err)
	}
	return &signerv1.DraftTrustRootResponse{Root: b}, nil
}

// PublishTrustRoot implements signerv1.KeyServiceServer.
func (h *Handler) PublishTrustRoot(ctx context.Context, req *signerv1.PublishTrustRootRequest) (*signerv1.PublishTrustRootResponse, error) {
	caller, _ := rpc.CallerID(ctx)
	v, err := h.m.Publish(ctx, req.GetRoot(), caller.String())
	if err != nil {
		return nil, h.status(ctx, err)
	}
	return &signerv1.PublishTrustRootResponse{Version: v}, nil
}

// PublicKeyProto is the API form of a key version.
func PublicKeyProto(in Info) *signerv1.PublicKey {
	pk := &signerv1.PublicKey{
		KeyId: in.ID, Algorithm: in.Algorithm, PublicKeyDer: in.PublicDER, ValidFrom: timestamppb.New(in.ValidFrom),
		Name: in.Name, Version: int32(in.Version.Version), Channels: in.Channels,
	}
	switch in.Purpose {
	case attest.PurposeArtifact:
		pk.Purpose = signerv1.KeyPurpose_KEY_PURPOSE_ARTIFACT
	case attest.PurposeDecision:
		pk.Purpose = signerv1.KeyPurpose_KEY_PURPOSE_DECISION
	case attest.PurposeBackup:
		pk.Purpose = signerv1.KeyPurpose_KEY_PURPOSE_BACKUP
	}
	switch in.Status {
	case StatusCurrent:
		pk.Status = signerv1.KeyStatus_KEY_STATUS_CURRENT
	case StatusPending:
		pk.Status = signerv1.KeyStatus_KEY_STATUS_PENDING
	case StatusRetired:
		pk.Status = signerv1.KeyStatus_KEY_STATUS_RETIRED
	case StatusRevoked:
		pk.Status = signerv1.KeyStatus_KEY_STATUS_REVOKED
	}
	if in.ValidUntil != nil {
		pk.ValidUntil = timestamppb.New(*in.ValidUntil)
	}
	if in.RevokedAt != nil {
		pk.RevokedAt = timestamppb.New(*in.RevokedAt)
	}
	return pk
}

func (h *Handler) status(ctx context.Context, err error) error {
	st := ToStatus(err)
	if status.Code(st) == codes.Internal {
		h.m.cfg.Logger.ErrorContext(ctx, "key service", slog.Any("error", err))
	}
	return st
}

// ToStatus maps this package's errors to gRPC codes.
func ToStatus(err error) error {
	switch {
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrPrecondition):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, "internal error")
}

func marshalDraft(r *trustroot.Root) ([]byte, error) {
	if len(r.RootKeys) > 0 {
		return r.Marshal()
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("marshal draft: %w", err)
	}
	return b, nil
}
