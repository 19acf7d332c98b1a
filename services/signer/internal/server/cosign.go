package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/services/signer/internal/cosign"
)

// Cosigner co-signs log checkpoints; *cosign.Cosigner implements it.
type Cosigner interface {
	Cosign(ctx context.Context, checkpoint []byte, fromSize uint64, proof [][]byte) ([]byte, error)
	Cosigned(origin string) ([]byte, error)
}

var _ Cosigner = (*cosign.Cosigner)(nil)

// SetCosigner makes CosignCheckpoint and GetCosignedCheckpoint serve c.
// Call it before serving; without it both fail with Unimplemented.
func (s *Server) SetCosigner(c Cosigner) { s.cosigner = c }

// CosignCheckpoint co-signs a checkpoint that extends the last one co-signed;
// see the proto for the contract.
func (s *Server) CosignCheckpoint(ctx context.Context, req *signerv1.CosignCheckpointRequest) (*signerv1.CosignCheckpointResponse, error) {
	if s.cosigner == nil {
		return nil, status.Error(codes.Unimplemented, "checkpoint co-signing is not configured on this signer")
	}
	if req.GetFromSize() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "from_size %d: want 0 or more", req.GetFromSize())
	}
	out, err := s.cosigner.Cosign(ctx, req.GetCheckpoint(), uint64(req.GetFromSize()), req.GetConsistencyProof())
	if err != nil {
		return nil, s.cosignStatus(ctx, err)
	}
	return &signerv1.CosignCheckpointResponse{Checkpoint: out}, nil
}

// GetCosignedCheckpoint returns the last checkpoint co-signed for a log.
func (s *Server) GetCosignedCheckpoint(ctx context.Context, req *signerv1.GetCosignedCheckpointRequest) (*signerv1.GetCosignedCheckpointResponse, error) {
	if s.cosigner == nil {
		return nil, status.Error(codes.Unimplemented, "checkpoint co-signing is not configured on this signer")
	}
	cp, err := s.cosigner.Cosigned(req.GetOrigin())
	if err != nil {
		return nil, s.cosignStatus(ctx, err)
	}
	return &signerv1.GetCosignedCheckpointResponse{Checkpoint: cp}, nil
}

// cosignStatus maps co-signing errors, then the signer's other errors
// through toStatus. Refusals are logged by the co-signer; internal errors
// are logged here, since the client only sees "internal error".
func (s *Server) cosignStatus(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, cosign.ErrRefused):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, cosign.ErrUnknownLog):
		return status.Error(codes.NotFound, err.Error())
	}
	st := toStatus(fmt.Errorf("co-sign checkpoint: %w", err))
	if status.Code(st) == codes.Internal {
		s.logger.ErrorContext(ctx, "co-sign checkpoint", slog.Any("error", err))
	}
	return st
}
