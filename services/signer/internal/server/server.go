// Package server is the signer's gRPC API: it signs provenance and decision
// statements as DSSE envelopes and publishes the public keys.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/attest"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/services/signer/internal/keys/soft"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Keys is a key back end: it lists public keys and signs with private keys
// it never hands out.
type Keys interface {
	Keys(ctx context.Context) ([]soft.Key, error)
	Sign(ctx context.Context, keyID string, message []byte) ([]byte, error)
}

var _ Keys = (*soft.Store)(nil)

// Errors the handlers map to status codes.
var (
	errInvalid     = errors.New("invalid request")
	errUnavailable = errors.New("key back end unavailable")
)

// Policy is who may call what; see docs/services.md.
func Policy(td spiffeid.TrustDomain) rpc.Policy {
	sd := signerv1.SignerService_ServiceDesc
	return rpc.Policy{
		rpc.Method(sd, "SignArtifact"):   {rpc.ID(spiffeid.RequireFromPath(td, "/service/publisher"))},
		rpc.Method(sd, "SignDecision"):   {rpc.ID(spiffeid.RequireFromPath(td, "/service/gatekeeper"))},
		rpc.Method(sd, "ListPublicKeys"): {rpc.Member(td)},
	}
}

// Server implements signerv1.SignerServiceServer.
type Server struct {
	signerv1.UnimplementedSignerServiceServer
	keys   Keys
	logger *slog.Logger
}

// New returns a signer API over keys.
func New(keys Keys, logger *slog.Logger) *Server {
	return &Server{keys: keys, logger: logger}
}

// SignArtifact signs a provenance statement with the current artifact key.
func (s *Server) SignArtifact(ctx context.Context, req *signerv1.SignArtifactRequest) (*signerv1.SignArtifactResponse, error) {
	st, err := attest.ParseStatement(req.GetStatement())
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: %v", errInvalid, err))
	}
	a, err := st.Artifact()
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: %v", errInvalid, err))
	}
	if req.GetChannel() == "" || req.GetChannel() != a.Channel {
		return nil, toStatus(fmt.Errorf("%w: channel %q differs from the statement's channel %q", errInvalid, req.GetChannel(), a.Channel))
	}
	env, id, err := s.sign(ctx, attest.PurposeArtifact, req.GetStatement())
	if err != nil {
		return nil, toStatus(err)
	}
	s.log(ctx, "signed artifact", id, a.Digest, slog.String("name", a.Name), slog.String("version", a.Version))
	return &signerv1.SignArtifactResponse{Envelope: env, KeyId: id}, nil
}

// SignDecision signs a decision record with the current decision key.
func (s *Server) SignDecision(ctx context.Context, req *signerv1.SignDecisionRequest) (*signerv1.SignDecisionResponse, error) {
	st, err := attest.ParseStatement(req.GetStatement())
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: %v", errInvalid, err))
	}
	d, err := st.Decision()
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: %v", errInvalid, err))
	}
	env, id, err := s.sign(ctx, attest.PurposeDecision, req.GetStatement())
	if err != nil {
		return nil, toStatus(err)
	}
	s.log(ctx, "signed decision", id, d.Digest, slog.String("decision_id", d.DecisionID), slog.Bool("passed", d.Passed))
	return &signerv1.SignDecisionResponse{Envelope: env, KeyId: id}, nil
}

// ListPublicKeys returns every key version's public half.
func (s *Server) ListPublicKeys(ctx context.Context, _ *signerv1.ListPublicKeysRequest) (*signerv1.ListPublicKeysResponse, error) {
	keys, err := s.keys.Keys(ctx)
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: %v", errUnavailable, err))
	}
	resp := &signerv1.ListPublicKeysResponse{}
	for _, k := range keys {
		resp.Keys = append(resp.Keys, &signerv1.PublicKey{
			KeyId: k.ID, Purpose: purposeProto(k.Purpose), Algorithm: k.Algorithm,
			PublicKeyDer: k.PublicDER, ValidFrom: timestamppb.New(k.ValidFrom),
		})
	}
	return resp, nil
}

// sign picks the newest key of the purpose and signs payload as a DSSE
// envelope.
func (s *Server) sign(ctx context.Context, purpose string, payload []byte) ([]byte, string, error) {
	keys, err := s.keys.Keys(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", errUnavailable, err)
	}
	var cur *soft.Key
	for i, k := range keys {
		if k.Purpose == purpose && (cur == nil || k.ValidFrom.After(cur.ValidFrom)) {
			cur = &keys[i]
		}
	}
	if cur == nil {
		return nil, "", fmt.Errorf("%w: no %s key", errUnavailable, purpose)
	}
	env, err := attest.SignEnvelope(attest.PayloadType, payload, cur.ID, func(pae []byte) ([]byte, error) {
		return s.keys.Sign(ctx, cur.ID, pae)
	})
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", errUnavailable, err)
	}
	return env, cur.ID, nil
}

func (s *Server) log(ctx context.Context, msg, keyID, digest string, attrs ...any) {
	caller, _ := rpc.CallerID(ctx)
	s.logger.InfoContext(ctx, msg, append([]any{slog.String("key_id", keyID), slog.String("digest", digest), slog.String("caller", caller.String())}, attrs...)...)
}

func purposeProto(p string) signerv1.KeyPurpose {
	switch p {
	case attest.PurposeArtifact:
		return signerv1.KeyPurpose_KEY_PURPOSE_ARTIFACT
	case attest.PurposeDecision:
		return signerv1.KeyPurpose_KEY_PURPOSE_DECISION
	}
	return signerv1.KeyPurpose_KEY_PURPOSE_UNSPECIFIED
}

// toStatus is the one mapping from domain errors to gRPC codes.
func toStatus(err error) error {
	switch {
	case errors.Is(err, errInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errUnavailable):
		return status.Error(codes.Unavailable, err.Error()+": check the signer's key back end")
	default:
		return status.Error(codes.Internal, "internal error")
	}
}
