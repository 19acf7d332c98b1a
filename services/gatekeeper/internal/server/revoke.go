package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
	"github.com/custody-dev/custody/services/gatekeeper/internal/stop"
)

// RevokeArtifact revokes one artifact for good; see the proto.
func (s *Server) RevokeArtifact(ctx context.Context, req *gatekeeperv1.RevokeArtifactRequest) (*gatekeeperv1.RevokeArtifactResponse, error) {
	id, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	// The reason first: a malformed request never reaches the catalog.
	if _, err := stop.CheckRevocationReason(req.GetReason()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	a, err := s.gate.Lookup(ctx, req.GetName(), req.GetVersion(), req.GetDigest())
	switch {
	case errors.Is(err, admission.ErrNotFound):
		return nil, status.Errorf(codes.NotFound, "%v: check the name and version (custody audit, custody search) and revoke by digest if it was published under another", err)
	case err != nil:
		return nil, s.status(ctx, "RevokeArtifact", err)
	}
	res, err := s.stops.Revoke(ctx, a.Digest, req.GetReason(), id)
	if res != nil && s.purges != nil {
		// The revocation applies (even if its event is not logged yet):
		// record its purge, once per digest; the queue asks the broker
		// until it accepts.
		if perr := s.purges.AddRevoked(a.Digest, s.now()); perr != nil {
			s.logger.ErrorContext(ctx, "revoked artifact's purge not recorded: purge it by hand (custody purge DIGEST --reason artifact-revoked)",
				slog.String("digest", a.Digest), slog.Any("error", perr))
		}
	}
	if err != nil {
		if errors.Is(err, stop.ErrFull) {
			return nil, status.Error(codes.ResourceExhausted, err.Error())
		}
		return nil, s.stopStatus(ctx, "RevokeArtifact", err)
	}
	return &gatekeeperv1.RevokeArtifactResponse{
		Revocation: revokedProto(res.Revocation), Name: a.Name, Version: a.Version, AlreadyRevoked: res.Already,
	}, nil
}

func revokedProto(r stop.Revocation) *gatekeeperv1.RevokedArtifact {
	return &gatekeeperv1.RevokedArtifact{Digest: r.Digest, EpochTime: timestamppb.New(r.EpochTime), Reason: r.Reason, RevokedBy: r.By, LogIndex: r.LogIndex}
}
