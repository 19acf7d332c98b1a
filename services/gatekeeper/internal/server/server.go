// Package server serves admission decisions over gRPC: authorization policy,
// request decoding and the mapping from domain errors to status codes.
package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/verify"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
	"github.com/custody-dev/custody/services/gatekeeper/internal/purge"
	"github.com/custody-dev/custody/services/gatekeeper/internal/rollback"
	"github.com/custody-dev/custody/services/gatekeeper/internal/stop"
)

// Policy is the gatekeeper's authorization, per docs/services.md: deployers
// and admins may ask for admission and report deployments; one admin turns a stop on, admins and
// approvers approve lifting it; admins, approvers, auditors, the broker and
// edges read the stop state; admins and approvers request and approve
// rollbacks (decision 0078), auditors list them too; admins and security
// identities revoke artifacts (decision 0104). Builders and deployers can neither pull nor
// lift a stop, nor revoke.
func Policy(td spiffeid.TrustDomain) rpc.Policy {
	sd := gatekeeperv1.GatekeeperService_ServiceDesc
	admin := rpc.Under{TrustDomain: td, Prefix: "/admin"}
	approver := rpc.Under{TrustDomain: td, Prefix: "/approver"}
	return rpc.Policy{
		rpc.Method(sd, "Admit"):            {rpc.Under{TrustDomain: td, Prefix: "/deployer"}, admin},
		rpc.Method(sd, "RecordDeployment"): {rpc.Under{TrustDomain: td, Prefix: "/deployer"}, admin},
		rpc.Method(sd, "Pause"):            {admin},
		rpc.Method(sd, "KillSwitchOn"):     {admin},
		rpc.Method(sd, "Resume"):           {admin, approver},
		rpc.Method(sd, "KillSwitchOff"):    {admin, approver},
		rpc.Method(sd, "RequestRollback"):  {admin, approver},
		rpc.Method(sd, "ApproveRollback"):  {admin, approver},
		rpc.Method(sd, "ListRollbacks"):    {admin, approver, rpc.Under{TrustDomain: td, Prefix: "/auditor"}},
		rpc.Method(sd, "RevokeArtifact"):   {admin, rpc.Under{TrustDomain: td, Prefix: "/security"}},
		rpc.Method(sd, "GetStopState"): {admin, approver, rpc.Under{TrustDomain: td, Prefix: "/auditor"},
			rpc.ID(spiffeid.RequireFromPath(td, "/service/cdn-broker")), rpc.Under{TrustDomain: td, Prefix: "/edge"}},
	}
}

// StreamWorkers is how many long-lived goroutines serve the gatekeeper's
// RPCs (rpc.ServerConfig.StreamWorkers): an admission evaluates OPA and
// verifies signatures, deep calls that would otherwise grow a fresh
// goroutine's stack copy by copy on every RPC (decision 0108). More
// concurrent RPCs than this each get their own goroutine.
const StreamWorkers = 256

// Admitter makes admission decisions and records deployments made under
// them.
type Admitter interface {
	Admit(ctx context.Context, req admission.Request) (*admission.Decision, error)
	RecordDeployment(ctx context.Context, req admission.DeploymentRequest) (*admission.Deployment, int64, error)
	// Lookup returns the catalog's record of an artifact (RevokeArtifact
	// resolves name@version through it).
	Lookup(ctx context.Context, name, version, digest string) (verify.Artifact, error)
}

var _ Admitter = (*admission.Gate)(nil)

// Server implements gatekeeperv1.GatekeeperServiceServer.
type Server struct {
	gatekeeperv1.UnimplementedGatekeeperServiceServer
	gate   Admitter
	logger *slog.Logger
	stops  *stop.Store
	rev    Revocations
	purges *purge.Queue
	rb     *rollback.Store
	finds  Findings
	now    func() time.Time
}

var _ gatekeeperv1.GatekeeperServiceServer = (*Server)(nil)

// New returns a server deciding with gate.
func New(gate Admitter, logger *slog.Logger) *Server {
	return &Server{gate: gate, logger: logger}
}

// Admit decides whether an artifact may be deployed; see the proto for the
// contract. A deny is a successful call.
func (s *Server) Admit(ctx context.Context, req *gatekeeperv1.AdmitRequest) (*gatekeeperv1.AdmitResponse, error) {
	id, ok := rpc.CallerID(ctx)
	if !ok {
		// The authorization interceptor already refuses such calls.
		return nil, status.Error(codes.Unauthenticated, "no SPIFFE ID: connect with mTLS and an X.509-SVID")
	}
	d, err := s.gate.Admit(ctx, admission.Request{
		Name: req.GetName(), Version: req.GetVersion(), Digest: req.GetDigest(),
		Environment: req.GetEnvironment(), Caller: id.String(),
	})
	if err != nil {
		return nil, s.status(ctx, "Admit", err)
	}
	decision := gatekeeperv1.Decision_DECISION_DENY
	if d.Allow {
		decision = gatekeeperv1.Decision_DECISION_ALLOW
	}
	real := gatekeeperv1.Decision_DECISION_DENY
	if d.RealVerdict() == "allow" {
		real = gatekeeperv1.Decision_DECISION_ALLOW
	}
	inputs := make([]*gatekeeperv1.InputAttestation, 0, len(d.InputAttestations))
	for _, a := range d.InputAttestations {
		inputs = append(inputs, &gatekeeperv1.InputAttestation{Uri: a.URI, Digest: a.Digest})
	}
	return &gatekeeperv1.AdmitResponse{
		Decision:          decision,
		Reasons:           d.Reasons,
		DecisionId:        d.ID,
		PolicyDigest:      d.PolicyDigest,
		PolicyRevision:    d.PolicyRevision,
		DryRun:            d.DryRun,
		RealDecision:      real,
		InputAttestations: inputs,
		Digest:            d.Digest,
		DecisionEnvelope:  d.Envelope,
		LogIndex:          d.LogIndex,
	}, nil
}

// status is the one mapping from domain errors to gRPC status. Request
// mistakes are returned with their message; dependency failures are logged
// with the trace ID and returned without internal detail.
func (s *Server) status(ctx context.Context, method string, err error) error {
	switch {
	case errors.Is(err, admission.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, admission.ErrNoAllow):
		return status.Error(codes.PermissionDenied, err.Error())
	}
	traceID := trace.SpanContextFromContext(ctx).TraceID().String()
	attrs := []any{slog.String("method", method), slog.String("trace_id", traceID), slog.Any("error", err)}
	switch {
	case errors.Is(err, admission.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		if method == "RevokeArtifact" {
			s.logger.WarnContext(ctx, "artifact not revoked: the catalog is unavailable", attrs...)
			return status.Errorf(codes.Unavailable, "not revoked: the catalog, which resolves the artifact, is unavailable; retry when it is back, or pause the environments or pull the kill switch meanwhile (trace %s)", traceID)
		}
		if method == "RecordDeployment" {
			s.logger.WarnContext(ctx, "deployment not recorded: a dependency is unavailable", attrs...)
			return status.Errorf(codes.Unavailable, "deployment not recorded: the catalog or signer is unavailable; retry later (trace %s)", traceID)
		}
		s.logger.WarnContext(ctx, "no decision: a dependency is unavailable", attrs...)
		return status.Errorf(codes.Unavailable, "no decision: the catalog, signer or publisher is unavailable, and the gatekeeper never returns an unverified, unsigned or unlogged decision; retry later (trace %s)", traceID)
	default:
		s.logger.ErrorContext(ctx, "internal error", attrs...)
		return status.Errorf(codes.Internal, "internal error (trace %s)", traceID)
	}
}

// RecordDeployment records a deployment made under an allow decision; see
// the proto for the contract.
func (s *Server) RecordDeployment(ctx context.Context, req *gatekeeperv1.RecordDeploymentRequest) (*gatekeeperv1.RecordDeploymentResponse, error) {
	id, ok := rpc.CallerID(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no SPIFFE ID: connect with mTLS and an X.509-SVID")
	}
	d, idx, err := s.gate.RecordDeployment(ctx, admission.DeploymentRequest{
		Name: req.GetName(), Version: req.GetVersion(), Digest: req.GetDigest(), Environment: req.GetEnvironment(),
		Envelope: req.GetDecisionEnvelope(), DecisionID: req.GetDecisionId(), Caller: id.String(),
	})
	if err != nil {
		return nil, s.status(ctx, "RecordDeployment", err)
	}
	return &gatekeeperv1.RecordDeploymentResponse{Name: d.Name, Version: d.Version, Digest: d.Digest,
		Environment: d.Environment, DecisionId: d.DecisionID, LogIndex: idx}, nil
}
