// Package server is the signer's gRPC API: it signs provenance and decision
// statements as DSSE envelopes and publishes the public keys.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/artifact"
	"github.com/custody-dev/custody/libs/attest"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/services/signer/internal/audit"
	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/custody-dev/custody/services/signer/internal/lifecycle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Keys names the back-end key that signs for each purpose.
type Keys struct {
	Artifact string
	Decision string
	// Backup signs backup-set manifests; empty for none.
	Backup string
	// Log is the Ed25519 key that co-signs log checkpoints; empty for none.
	Log string
}

// Errors the handlers map to status codes.
var (
	errInvalid     = errors.New("invalid request")
	errUnavailable = errors.New("key back end unavailable")
)

// Errors an Approvals returns, mapped by toStatus.
var (
	// ErrNotApproved: the request was rejected, expired, or the wait ended
	// without a quorum.
	ErrNotApproved = errors.New("not approved")
	// ErrApprovalsUnavailable: the approval state or the audit log cannot be
	// written now.
	ErrApprovalsUnavailable = errors.New("approvals unavailable")
)

// ApprovalSubject is what approvers vouch for: one statement on one channel,
// signed with one key.
type ApprovalSubject struct {
	Name, Version, Digest, Channel, KeyName string
	BuilderID, SourceRepo, SourceCommit     string
}

// Approvals holds artifact signatures on protected channels until a quorum
// of approvers has approved. Implementations are safe for concurrent use.
type Approvals interface {
	// Await blocks until s may be signed. Its errors wrap ErrNotApproved or
	// ErrApprovalsUnavailable.
	Await(ctx context.Context, s ApprovalSubject) error
	// Rejection returns an error wrapping ErrNotApproved if a request for
	// s's name@version was rejected, on any channel; nil otherwise.
	Rejection(s ApprovalSubject) error
	// Signed records that s, released by Await, was signed by keyID. The
	// envelope is returned only if it succeeds; errors as for Await.
	Signed(ctx context.Context, s ApprovalSubject, keyID string) error
	// Protected reports whether channel needs approvals.
	Protected(channel string) bool
}

// Policy is who may call what; see docs/services.md.
func Policy(td spiffeid.TrustDomain) rpc.Policy {
	sd := signerv1.SignerService_ServiceDesc
	ad := signerv1.ApprovalService_ServiceDesc
	kd := signerv1.KeyService_ServiceDesc
	under := func(p string) rpc.Rule { return rpc.Under{TrustDomain: td, Prefix: p} }
	return rpc.Policy{
		rpc.Method(sd, "SignArtifact"):          {rpc.ID(spiffeid.RequireFromPath(td, "/service/publisher"))},
		rpc.Method(sd, "SignArtifacts"):         {rpc.ID(spiffeid.RequireFromPath(td, "/service/publisher"))},
		rpc.Method(sd, "SignDecision"):          {rpc.ID(spiffeid.RequireFromPath(td, "/service/gatekeeper"))},
		rpc.Method(sd, "ListPublicKeys"):        {rpc.Member(td)},
		rpc.Method(sd, "ResignArtifact"):        {under("/admin")},
		rpc.Method(sd, "GetTrustRoot"):          {rpc.Member(td)},
		rpc.Method(sd, "SignBackupManifest"):    {under("/admin"), rpc.ID(spiffeid.RequireFromPath(td, "/service/backup"))},
		rpc.Method(kd, "ListKeys"):              {under("/admin")},
		rpc.Method(kd, "RotateKey"):             {under("/admin")},
		rpc.Method(kd, "RevokeKeyVersion"):      {under("/admin")},
		rpc.Method(kd, "DraftTrustRoot"):        {under("/admin")},
		rpc.Method(kd, "PublishTrustRoot"):      {under("/admin")},
		rpc.Method(ad, "ListApprovalRequests"):  {under("/approver"), under("/admin")},
		rpc.Method(ad, "Approve"):               {under("/approver")},
		rpc.Method(ad, "Reject"):                {under("/approver")},
		rpc.Method(sd, "CosignCheckpoint"):      {rpc.ID(spiffeid.RequireFromPath(td, "/service/catalog"))},
		rpc.Method(sd, "GetCosignedCheckpoint"): {rpc.ID(spiffeid.RequireFromPath(td, "/service/catalog"))},
	}
}

// Server implements signerv1.SignerServiceServer.
type Server struct {
	signerv1.UnimplementedSignerServiceServer
	backend    keys.Backend
	lc         *lifecycle.Manager
	logger     *slog.Logger
	approvals  Approvals  // nil: no channel needs approvals
	cosigner   Cosigner   // nil: no checkpoint co-signing
	signatures Signatures // nil: ResignArtifact fails FailedPrecondition
}

// Signatures records re-signatures in the catalog. Implementations are
// safe for concurrent use.
type Signatures interface {
	// RecordSignature makes envelope, a re-signature, the current envelope
	// of name@version and returns the index of the artifact.resigned
	// entry logged for it. Its errors wrap audit.ErrUnavailable (retry) or
	// audit.ErrRefused.
	RecordSignature(ctx context.Context, name, version string, envelope []byte) (int64, error)
}

var _ Signatures = (*audit.Catalog)(nil)

// SetSignatures makes ResignArtifact record each re-signature through r.
// Call it before serving.
func (s *Server) SetSignatures(r Signatures) { s.signatures = r }

// New returns a signer API signing with the keys of backend that lc
// chooses: a key per channel, the version the published trust root lists,
// never a revoked one.
func New(backend keys.Backend, lc *lifecycle.Manager, logger *slog.Logger) *Server {
	return &Server{backend: backend, lc: lc, logger: logger}
}

// SetApprovals makes SignArtifact wait for a's approvals. Call it before
// serving.
func (s *Server) SetApprovals(a Approvals) { s.approvals = a }

// EnsureKeys creates each named key that does not exist yet (ECDSA P-256;
// the log key Ed25519), for back ends whose credentials allow it (the
// software keystore, an HSM login); with Vault a custodian creates them.
func EnsureKeys(ctx context.Context, b keys.Backend, names Keys) error {
	algs := map[string]string{names.Artifact: keys.ECDSAP256, names.Decision: keys.ECDSAP256, names.Backup: keys.ECDSAP256}
	if names.Log != "" {
		algs[names.Log] = keys.Ed25519
	}
	for _, name := range []string{names.Artifact, names.Decision, names.Backup, names.Log} {
		if name == "" {
			continue
		}
		_, err := b.Versions(ctx, name)
		if errors.Is(err, keys.ErrNotFound) {
			_, err = b.Create(ctx, name, algs[name])
		}
		if err != nil && !errors.Is(err, keys.ErrExists) {
			return fmt.Errorf("key %q: %w", name, err)
		}
	}
	return nil
}

// artifactRequest checks a signing request and returns what approvers
// would vouch for. An SBOM statement (attest.SBOMPredicateType) is
// returned as sbom, with the key of the channel named: it needs no
// approvals (see signSBOM).
func (s *Server) artifactRequest(req *signerv1.SignArtifactRequest) (subject ApprovalSubject, sbom *attest.SBOMRef, err error) {
	st, err := attest.ParseStatement(req.GetStatement())
	if err != nil {
		return ApprovalSubject{}, nil, fmt.Errorf("%w: %v", errInvalid, err)
	}
	if st.PredicateType == attest.SBOMPredicateType {
		ref, err := st.SBOM()
		if err != nil {
			return ApprovalSubject{}, nil, fmt.Errorf("%w: %v", errInvalid, err)
		}
		if !artifact.ValidChannel(req.GetChannel()) {
			return ApprovalSubject{}, nil, fmt.Errorf("%w: channel %q: an SBOM statement is signed with the key of its artifact's channel: give that channel", errInvalid, quote.Prefix(req.GetChannel()))
		}
		return ApprovalSubject{Name: ref.ArtifactName, Digest: ref.ArtifactDigest, Channel: req.GetChannel(), KeyName: s.lc.ArtifactKey(req.GetChannel())}, ref, nil
	}
	a, err := st.Artifact()
	if err != nil {
		return ApprovalSubject{}, nil, fmt.Errorf("%w: %v", errInvalid, err)
	}
	if req.GetChannel() == "" || req.GetChannel() != a.Channel {
		return ApprovalSubject{}, nil, fmt.Errorf("%w: channel %q differs from the statement's channel %q", errInvalid, quote.Prefix(req.GetChannel()), quote.Prefix(a.Channel))
	}
	return ApprovalSubject{Name: a.Name, Version: a.Version, Digest: a.Digest, Channel: a.Channel, KeyName: s.lc.ArtifactKey(a.Channel),
		BuilderID: a.BuilderID, SourceRepo: a.SourceRepo, SourceCommit: a.SourceCommit}, nil, nil
}

// signSBOM signs an SBOM statement with the artifact key of its channel.
// It waits for no approvals, on any channel: the statement admits nothing
// by itself (every verifier of an artifact requires the provenance
// predicate), it only says which document lists the artifact's contents,
// and the artifact it names was approved, or not, on its own; the
// publisher asks for it only for the builder that published the artifact
// (decision 0076).
func (s *Server) signSBOM(ctx context.Context, subject ApprovalSubject, ref *attest.SBOMRef, statement []byte, batch bool) ([]byte, string, error) {
	env, key, err := s.sign(ctx, subject.KeyName, statement)
	if err != nil {
		return nil, "", err
	}
	s.log(ctx, "signed SBOM statement", key, ref.ArtifactDigest, slog.String("name", ref.ArtifactName), slog.String("document", ref.DocumentDigest),
		slog.String("format", ref.Format), slog.Bool("batch", batch))
	return env, key.ID, nil
}

// MaxSignBatch bounds the items of one SignArtifacts call.
const MaxSignBatch = 256

// SignArtifacts signs each item as SignArtifact does, concurrently, except
// items on channels that need approvals: those are refused, not awaited.
func (s *Server) SignArtifacts(ctx context.Context, req *signerv1.SignArtifactsRequest) (*signerv1.SignArtifactsResponse, error) {
	items := req.GetItems()
	if len(items) > MaxSignBatch {
		return nil, toStatus(fmt.Errorf("%w: %d items, at most %d", errInvalid, len(items), MaxSignBatch))
	}
	results := make([]*signerv1.SignArtifactsResult, len(items))
	var wg sync.WaitGroup
	for i, item := range items {
		wg.Go(func() {
			r := &signerv1.SignArtifactsResult{}
			results[i] = r
			env, keyID, err := s.signOne(ctx, item)
			if err != nil {
				st := status.Convert(toStatus(err))
				r.Code, r.Message = int32(st.Code()), st.Message()
				return
			}
			r.Envelope, r.KeyId = env, keyID
		})
	}
	wg.Wait()
	return &signerv1.SignArtifactsResponse{Results: results}, nil
}

func (s *Server) signOne(ctx context.Context, req *signerv1.SignArtifactRequest) ([]byte, string, error) {
	subject, sbom, err := s.artifactRequest(req)
	if err != nil {
		return nil, "", err
	}
	if sbom != nil {
		return s.signSBOM(ctx, subject, sbom, req.GetStatement(), true)
	}
	if s.approvals != nil {
		if err := s.approvals.Rejection(subject); err != nil {
			return nil, "", err
		}
		if s.approvals.Protected(subject.Channel) {
			return nil, "", fmt.Errorf("%w: channel %s needs approvals: sign it with SignArtifact, which waits for them", ErrNotApproved, subject.Channel)
		}
	}
	env, key, err := s.sign(ctx, subject.KeyName, req.GetStatement())
	if err != nil {
		return nil, "", err
	}
	s.log(ctx, "signed artifact", key, subject.Digest, slog.String("name", subject.Name), slog.String("version", subject.Version), slog.Bool("batch", true))
	return env, key.ID, nil
}

// SignArtifact signs a provenance statement, or an SBOM statement about an
// artifact, with the current artifact key of the channel.
func (s *Server) SignArtifact(ctx context.Context, req *signerv1.SignArtifactRequest) (*signerv1.SignArtifactResponse, error) {
	subject, sbom, err := s.artifactRequest(req)
	if err != nil {
		return nil, toStatus(err)
	}
	if sbom != nil {
		env, keyID, err := s.signSBOM(ctx, subject, sbom, req.GetStatement(), false)
		if err != nil {
			return nil, toStatus(err)
		}
		return &signerv1.SignArtifactResponse{Envelope: env, KeyId: keyID}, nil
	}
	if s.approvals != nil {
		if err := s.approvals.Rejection(subject); err != nil {
			return nil, toStatus(err)
		}
		if err := s.approvals.Await(ctx, subject); err != nil {
			return nil, toStatus(err)
		}
	}
	env, key, err := s.sign(ctx, subject.KeyName, req.GetStatement())
	if err != nil {
		return nil, toStatus(err)
	}
	if s.approvals != nil {
		if err := s.approvals.Signed(ctx, subject, key.ID); err != nil {
			return nil, toStatus(err)
		}
	}
	s.log(ctx, "signed artifact", key, subject.Digest, slog.String("name", subject.Name), slog.String("version", subject.Version))
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
	env, key, err := s.sign(ctx, s.lc.DecisionKey(), req.GetStatement())
	if err != nil {
		return nil, toStatus(err)
	}
	s.log(ctx, "signed decision", key, d.Digest, slog.String("decision_id", d.DecisionID), slog.Bool("passed", d.Passed))
	return &signerv1.SignDecisionResponse{Envelope: env, KeyId: key.ID}, nil
}

// errNoBackupKey: the signer was started without --backup-key.
var errNoBackupKey = errors.New("no backup key")

// SignBackupManifest signs a backup-set statement with the current backup
// key.
func (s *Server) SignBackupManifest(ctx context.Context, req *signerv1.SignBackupManifestRequest) (*signerv1.SignBackupManifestResponse, error) {
	st, err := attest.ParseStatement(req.GetStatement())
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: %v", errInvalid, err))
	}
	b, err := st.Backup()
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: %v", errInvalid, err))
	}
	if s.lc.BackupKey() == "" {
		return nil, toStatus(fmt.Errorf("%w: start the signer with --backup-key to sign backup manifests", errNoBackupKey))
	}
	env, key, err := s.sign(ctx, s.lc.BackupKey(), req.GetStatement())
	if err != nil {
		return nil, toStatus(err)
	}
	s.log(ctx, "signed backup manifest", key, b.ManifestDigest, slog.String("site", b.Site), slog.Int("files", b.Files), slog.Uint64("log_size", b.LogSize))
	return &signerv1.SignBackupManifestResponse{Envelope: env, KeyId: key.ID}, nil
}

// ListPublicKeys returns every key version's public half.
func (s *Server) ListPublicKeys(ctx context.Context, _ *signerv1.ListPublicKeysRequest) (*signerv1.ListPublicKeysResponse, error) {
	infos, err := s.lc.List(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &signerv1.ListPublicKeysResponse{}
	for _, in := range infos {
		resp.Keys = append(resp.Keys, lifecycle.PublicKeyProto(in))
	}
	return resp, nil
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

// sign signs payload as a DSSE envelope with the current version of key
// name.
func (s *Server) sign(ctx context.Context, name string, payload []byte) ([]byte, keys.Version, error) {
	cur, err := s.lc.Current(ctx, name)
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

// toStatus is the one mapping from domain errors to gRPC codes.
func toStatus(err error) error {
	if lifecycle.IsKeyError(err) {
		return lifecycle.ToStatus(err)
	}
	switch {
	case errors.Is(err, errInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errUnavailable), errors.Is(err, keys.ErrUnavailable), errors.Is(err, ErrApprovalsUnavailable), errors.Is(err, audit.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, ErrNotApproved), errors.Is(err, audit.ErrRefused), errors.Is(err, errNoBackupKey):
		return status.Error(codes.FailedPrecondition, err.Error())
	default:
		return status.Error(codes.Internal, "internal error")
	}
}
