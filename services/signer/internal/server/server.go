// Package server is the signer's gRPC API: it signs provenance and decision
// statements as DSSE envelopes and publishes the public keys.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/attest"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Keys names the back-end key that signs for each purpose.
type Keys struct {
	Artifact string
	Decision string
}

func (k Keys) byPurpose() map[string]string {
	return map[string]string{attest.PurposeArtifact: k.Artifact, attest.PurposeDecision: k.Decision}
}

// currentTTL is how long the current version of a key is cached before the
// back end is asked again; a rotation by another process is picked up
// within it.
const currentTTL = 5 * time.Second

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
	backend keys.Backend
	names   Keys
	logger  *slog.Logger
	now     func() time.Time

	mu      sync.Mutex
	current map[string]cached // key name → newest version
}

type cached struct {
	v       keys.Version
	fetched time.Time
}

// New returns a signer API signing with the named keys of backend.
func New(backend keys.Backend, names Keys, logger *slog.Logger) *Server {
	return &Server{backend: backend, names: names, logger: logger, now: time.Now, current: map[string]cached{}}
}

// EnsureKeys creates each named key that does not exist yet (ECDSA P-256),
// for back ends whose credentials allow it (the software keystore, an HSM
// login); with Vault a custodian creates them.
func EnsureKeys(ctx context.Context, b keys.Backend, names Keys) error {
	for _, name := range []string{names.Artifact, names.Decision} {
		_, err := b.Versions(ctx, name)
		if errors.Is(err, keys.ErrNotFound) {
			_, err = b.Create(ctx, name, keys.ECDSAP256)
		}
		if err != nil && !errors.Is(err, keys.ErrExists) {
			return fmt.Errorf("key %q: %w", name, err)
		}
	}
	return nil
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
	env, key, err := s.sign(ctx, attest.PurposeArtifact, req.GetStatement())
	if err != nil {
		return nil, toStatus(err)
	}
	s.log(ctx, "signed artifact", key, a.Digest, slog.String("name", a.Name), slog.String("version", a.Version))
	return &signerv1.SignArtifactResponse{Envelope: env, KeyId: key.ID}, nil
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
	env, key, err := s.sign(ctx, attest.PurposeDecision, req.GetStatement())
	if err != nil {
		return nil, toStatus(err)
	}
	s.log(ctx, "signed decision", key, d.Digest, slog.String("decision_id", d.DecisionID), slog.Bool("passed", d.Passed))
	return &signerv1.SignDecisionResponse{Envelope: env, KeyId: key.ID}, nil
}

// ListPublicKeys returns every key version's public half.
func (s *Server) ListPublicKeys(ctx context.Context, _ *signerv1.ListPublicKeysRequest) (*signerv1.ListPublicKeysResponse, error) {
	resp := &signerv1.ListPublicKeysResponse{}
	for _, purpose := range []string{attest.PurposeArtifact, attest.PurposeDecision} {
		name := s.names.byPurpose()[purpose]
		vs, err := s.backend.Versions(ctx, name)
		if err != nil {
			return nil, toStatus(s.backendErr(name, err))
		}
		for _, v := range vs {
			resp.Keys = append(resp.Keys, &signerv1.PublicKey{
				KeyId: v.ID, Purpose: purposeProto(purpose), Algorithm: v.Algorithm,
				PublicKeyDer: v.PublicDER, ValidFrom: timestamppb.New(v.Created),
			})
		}
		s.remember(name, vs[len(vs)-1])
	}
	return resp, nil
}

func (s *Server) remember(name string, v keys.Version) {
	s.mu.Lock()
	s.current[name] = cached{v: v, fetched: s.now()}
	s.mu.Unlock()
}

// currentVersion is the newest version of key name.
func (s *Server) currentVersion(ctx context.Context, name string) (keys.Version, error) {
	s.mu.Lock()
	c, ok := s.current[name]
	s.mu.Unlock()
	if ok && s.now().Sub(c.fetched) < currentTTL {
		return c.v, nil
	}
	vs, err := s.backend.Versions(ctx, name)
	if err != nil {
		return keys.Version{}, s.backendErr(name, err)
	}
	v := vs[len(vs)-1]
	s.remember(name, v)
	return v, nil
}

// backendErr wraps a back-end error for toStatus.
func (s *Server) backendErr(name string, err error) error {
	switch {
	case errors.Is(err, keys.ErrUnavailable):
		return fmt.Errorf("%s key %q: %w", s.backend.Kind(), name, err)
	case errors.Is(err, keys.ErrNotFound):
		return fmt.Errorf("%w: %s key %q is missing: create it in the key back end", errUnavailable, s.backend.Kind(), name)
	}
	return fmt.Errorf("%s key %q: %w", s.backend.Kind(), name, err)
}

// sign signs payload as a DSSE envelope with the current version of the
// purpose's key.
func (s *Server) sign(ctx context.Context, purpose string, payload []byte) ([]byte, keys.Version, error) {
	name := s.names.byPurpose()[purpose]
	cur, err := s.currentVersion(ctx, name)
	if err != nil {
		return nil, keys.Version{}, err
	}
	var signErr error
	env, err := attest.SignEnvelope(attest.PayloadType, payload, cur.ID, func(pae []byte) ([]byte, error) {
		sig, err := s.backend.Sign(ctx, name, cur.Version, pae)
		signErr = err
		return sig, err
	})
	if signErr != nil {
		return nil, keys.Version{}, s.backendErr(name, signErr)
	}
	if err != nil {
		return nil, keys.Version{}, err
	}
	return env, cur, nil
}

// log records a signature with the back end, key name and key version that
// made it.
func (s *Server) log(ctx context.Context, msg string, key keys.Version, digest string, attrs ...any) {
	caller, _ := rpc.CallerID(ctx)
	s.logger.InfoContext(ctx, msg, append([]any{
		slog.String("key_id", key.ID), slog.String("backend", s.backend.Kind()), slog.String("key_name", key.Name),
		slog.Int("key_version", key.Version), slog.String("digest", digest), slog.String("caller", caller.String()),
	}, attrs...)...)
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
	case errors.Is(err, errUnavailable), errors.Is(err, keys.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	default:
		return status.Error(codes.Internal, "internal error")
	}
}
