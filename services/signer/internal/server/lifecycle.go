package server

import (
	"context"
	"fmt"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/rpc"
)

// ResignArtifact implements signerv1.SignerServiceServer.
// The new envelope is recorded in the catalog by the signer itself: the
// catalog takes re-signatures only from the signer's identity, so an admin
// cannot record an envelope the signer did not make.
func (s *Server) ResignArtifact(ctx context.Context, req *signerv1.ResignArtifactRequest) (*signerv1.ResignArtifactResponse, error) {
	if s.signatures == nil {
		// Fail before signing: a re-signature nobody records is never
		// current and only adds a signature to account for.
		return nil, status.Error(codes.FailedPrecondition,
			"this signer has no --catalog-addr: it records re-signatures in the catalog itself; restart it with --catalog-addr")
	}
	r, err := s.lc.Resign(ctx, req.GetEnvelope())
	if err != nil {
		return nil, toStatus(err)
	}
	caller, _ := rpc.CallerID(ctx)
	index, err := s.signatures.RecordSignature(ctx, r.Artifact.Name, r.Artifact.Version, r.Envelope)
	if err != nil {
		s.logger.WarnContext(ctx, "re-signature not recorded in the catalog", slog.String("key_id", r.Key.ID),
			slog.String("name", r.Artifact.Name), slog.String("version", r.Artifact.Version), slog.String("caller", caller.String()), slog.Any("error", err))
		return nil, toStatus(err)
	}
	s.logger.InfoContext(ctx, "re-signed artifact", slog.String("key_id", r.Key.ID), slog.String("key_name", r.Key.Name),
		slog.Int("key_version", r.Key.Version), slog.String("previous_key_id", r.Previous.ID), slog.Int("previous_key_version", r.Previous.Version),
		slog.String("digest", r.Artifact.Digest), slog.String("name", r.Artifact.Name), slog.String("version", r.Artifact.Version),
		slog.String("backend", s.backend.Kind()), slog.String("caller", caller.String()), slog.Int64("log_index", index))
	return &signerv1.ResignArtifactResponse{Envelope: r.Envelope, KeyId: r.Key.ID, PreviousKeyId: r.Previous.ID, LogIndex: index}, nil
}

// GetTrustRoot implements signerv1.SignerServiceServer.
func (s *Server) GetTrustRoot(_ context.Context, req *signerv1.GetTrustRootRequest) (*signerv1.GetTrustRootResponse, error) {
	if req.GetAfterVersion() < 0 {
		return nil, toStatus(fmt.Errorf("%w: after_version %d must not be negative", errInvalid, req.GetAfterVersion()))
	}
	roots := s.lc.Roots(req.GetAfterVersion())
	if len(roots) == 0 && req.GetAfterVersion() == 0 {
		return nil, status.Error(codes.NotFound, "no trust root is published yet: run the signing ceremony (docs/trust-root.md)")
	}
	return &signerv1.GetTrustRootResponse{Roots: roots}, nil
}
