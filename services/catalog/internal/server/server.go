// Package server serves the catalog over gRPC: authorization policy,
// request decoding and the mapping from domain errors to status codes.
package server

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/eventlog"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/translog"
)

// Policy is the catalog's authorization, per docs/services.md: only the
// publisher records artifacts; only the signer records re-signatures (from
// its ResignArtifact, and RecordSignature checks tlog's table again); services
// and edges append events (each only the types tlog.MayEmit allows it,
// checked by the catalog); security identities and admins import
// advisories; security identities add VEX documents; every member of the trust domain reads. The
// catalog's own ID forwards writes from followers (behalf.go).
func Policy(td spiffeid.TrustDomain) rpc.Policy {
	sd := catalogv1.CatalogService_ServiceDesc
	// The catalog's own ID reaches the writes only to forward them from a
	// follower, on behalf of a caller named in OnBehalfOfHeader, who is
	// authorized by this policy again (Server.caller, 0070).
	self := rpc.ID(spiffeid.RequireFromPath(td, "/service/catalog"))
	return rpc.Policy{
		rpc.Method(sd, "RecordArtifact"):  {rpc.ID(spiffeid.RequireFromPath(td, "/service/publisher")), self},
		rpc.Method(sd, "AppendEvent"):     {rpc.Under{TrustDomain: td, Prefix: "/service"}, rpc.Under{TrustDomain: td, Prefix: "/edge"}},
		rpc.Method(sd, "AppendEvents"):    {rpc.Under{TrustDomain: td, Prefix: "/service"}, rpc.Under{TrustDomain: td, Prefix: "/edge"}},
		rpc.Method(sd, "GetArtifact"):     {rpc.Member(td)},
		rpc.Method(sd, "GetCheckpoint"):   {rpc.Member(td)},
		rpc.Method(sd, "RecordSignature"): {rpc.ID(spiffeid.RequireFromPath(td, "/service/signer")), self},
		rpc.Method(sd, "ListArtifacts"):   {rpc.Member(td)},
		// The log is public to the trust domain: anyone may check it.
		rpc.Method(sd, "GetEntries"):          {rpc.Member(td)},
		rpc.Method(sd, "GetInclusionProof"):   {rpc.Member(td)},
		rpc.Method(sd, "GetConsistencyProof"): {rpc.Member(td)},
		rpc.Method(sd, "SearchArtifacts"):     {rpc.Member(td)},
		rpc.Method(sd, "ListEvents"):          {rpc.Member(td)},
		rpc.Method(sd, "GetLineage"):          {rpc.Member(td)},
		rpc.Method(sd, "GetLineagePath"):      {rpc.Member(td)},
		// Deployments are reported through the gatekeeper, which verifies
		// the allow decision first (DESIGN.md, who may write which event).
		rpc.Method(sd, "RecordDeployment"): {rpc.ID(spiffeid.RequireFromPath(td, "/service/gatekeeper")), self},
		// SBOMs come through the publisher, which authenticated the
		// builder that attaches one (the catalog checks it is the
		// artifact's builder); any member reads them.
		rpc.Method(sd, "RecordSBOM"): {rpc.ID(spiffeid.RequireFromPath(td, "/service/publisher")), self},
		rpc.Method(sd, "GetSBOM"):    {rpc.Member(td)},
		// Advisories are imported by security identities and admins
		// (decision 0081); tlog.MayEmit checks the same again.
		rpc.Method(sd, "ImportAdvisories"): {rpc.Under{TrustDomain: td, Prefix: "/security"}, rpc.Under{TrustDomain: td, Prefix: "/admin"}, self},
		rpc.Method(sd, "GetAdvisory"):      {rpc.Member(td)},
		rpc.Method(sd, "ListFindings"):     {rpc.Member(td)},
		// VEX statements come from security identities only, not admins
		// (decision 0096); tlog.MayEmit checks the same again. Any member
		// reads them.
		rpc.Method(sd, "AddVex"):  {rpc.Under{TrustDomain: td, Prefix: "/security"}, self},
		rpc.Method(sd, "ListVex"): {rpc.Member(td)},
	}
}

// Server implements catalogv1.CatalogServiceServer.
type Server struct {
	catalogv1.UnimplementedCatalogServiceServer
	cat     *catalog.Catalog
	ledger  *catalog.Ledger
	logger  *slog.Logger
	metrics *telemetry.Metrics
	// self and policy: see WithForwarding.
	self   spiffeid.ID
	policy rpc.Policy
	// importing is held while an advisory import is received and stored:
	// one set in memory at a time.
	importing sync.Mutex
	// importReceive bounds receiving one set (MaxImportReceive).
	importReceive time.Duration
}

var _ catalogv1.CatalogServiceServer = (*Server)(nil)

// Option configures New.
type Option func(*Server)

// WithLedger serves the log reads (GetEntries, GetInclusionProof,
// GetConsistencyProof) from l; without it they are Unimplemented.
func WithLedger(l *catalog.Ledger) Option { return func(s *Server) { s.ledger = l } }

// WithImportReceive bounds the time a caller may take to send an advisory
// set (default MaxImportReceive).
func WithImportReceive(d time.Duration) Option { return func(s *Server) { s.importReceive = d } }

// New returns a server for cat.
func New(cat *catalog.Catalog, logger *slog.Logger, metrics *telemetry.Metrics, opts ...Option) *Server {
	s := &Server{cat: cat, logger: logger, metrics: metrics, importReceive: MaxImportReceive}
	for _, o := range opts {
		o(s)
	}
	return s
}

// RecordArtifact records an artifact; see the proto for the contract.
func (s *Server) RecordArtifact(ctx context.Context, req *catalogv1.RecordArtifactRequest) (*catalogv1.RecordArtifactResponse, error) {
	actor, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	pa := req.GetArtifact()
	if pa == nil {
		return nil, status.Error(codes.InvalidArgument, "artifact is missing")
	}
	a := catalog.Artifact{
		Name: pa.GetName(), Version: pa.GetVersion(), Digest: pa.GetDigest(), Size: pa.GetSize(),
		Channel: pa.GetChannel(), BuilderID: pa.GetBuilderId(), SourceRepo: pa.GetSourceRepo(), SourceCommit: pa.GetSourceCommit(),
	}
	rec, created, err := s.cat.RecordArtifact(ctx, actor, a, req.GetEnvelope())
	if err != nil {
		return nil, s.status(ctx, "RecordArtifact", err)
	}
	s.logger.InfoContext(ctx, "artifact recorded", slog.String("artifact", a.Name+"@"+a.Version), slog.String("digest", a.Digest),
		slog.Uint64("index", rec.Entry.Index), slog.Bool("created", created))
	return &catalogv1.RecordArtifactResponse{Entry: logEntry(&rec.Entry), Created: created}, nil
}

// AppendEvent appends an audit event; see the proto for the contract.
func (s *Server) AppendEvent(ctx context.Context, req *catalogv1.AppendEventRequest) (*catalogv1.AppendEventResponse, error) {
	actor, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	return s.appendEvent(ctx, actor, req)
}

// appendEvent is AppendEvent for the caller actor.
func (s *Server) appendEvent(ctx context.Context, actor string, req *catalogv1.AppendEventRequest) (*catalogv1.AppendEventResponse, error) {
	appendEvent := s.cat.AppendEvent
	switch req.GetWait() {
	case catalogv1.AppendWait_APPEND_WAIT_UNSPECIFIED, catalogv1.AppendWait_APPEND_WAIT_PROVED:
	case catalogv1.AppendWait_APPEND_WAIT_SEQUENCED:
		appendEvent = s.cat.SequenceEvent
	default:
		return nil, status.Errorf(codes.InvalidArgument, "wait %d: want APPEND_WAIT_PROVED or APPEND_WAIT_SEQUENCED", req.GetWait())
	}
	if err := catalog.CheckAppendable(req.GetType()); err != nil {
		return nil, s.status(ctx, "AppendEvent", err)
	}
	e, err := appendEvent(ctx, actor, req.GetType(), req.GetSubjectDigest(), req.GetDetails())
	if err != nil {
		return nil, s.status(ctx, "AppendEvent", err)
	}
	return &catalogv1.AppendEventResponse{Entry: logEntry(&e.Entry)}, nil
}

// MaxAppendBatch is the most events one AppendEvents call may carry.
const MaxAppendBatch = 256

// AppendEvents appends each event as AppendEvent would, all at once: they
// join the same group commits, and one event's error is its own result.
func (s *Server) AppendEvents(ctx context.Context, req *catalogv1.AppendEventsRequest) (*catalogv1.AppendEventsResponse, error) {
	evs := req.GetEvents()
	if len(evs) == 0 || len(evs) > MaxAppendBatch {
		return nil, status.Errorf(codes.InvalidArgument, "%d events: send 1 to %d", len(evs), MaxAppendBatch)
	}
	// The caller is the call's, the same for each of its events: resolved
	// once, not once an event.
	actor, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	results := make([]*catalogv1.AppendEventResult, len(evs))
	var wg sync.WaitGroup
	for i, e := range evs {
		wg.Go(func() { results[i] = eventlog.Result(s.appendEvent(ctx, actor, e)) })
	}
	wg.Wait()
	return &catalogv1.AppendEventsResponse{Results: results}, nil
}

// GetArtifact returns an artifact with its evidence, by name and version or
// by digest.
func (s *Server) GetArtifact(ctx context.Context, req *catalogv1.GetArtifactRequest) (*catalogv1.GetArtifactResponse, error) {
	var (
		rec *catalog.ArtifactRecord
		err error
	)
	switch {
	case req.GetDigest() != "" && (req.GetName() != "" || req.GetVersion() != ""):
		return nil, status.Error(codes.InvalidArgument, "give either name and version, or digest, not both")
	case req.GetDigest() != "":
		rec, err = s.cat.ArtifactByDigest(ctx, req.GetDigest())
	default:
		rec, err = s.cat.Artifact(ctx, req.GetName(), req.GetVersion())
	}
	if err != nil {
		return nil, s.status(ctx, "GetArtifact", err)
	}
	envelope, _, entry := rec.Current()
	resp := &catalogv1.GetArtifactResponse{Artifact: artifact(rec.Artifact), Envelope: envelope, Entry: logEntry(entry)}
	// Readers that would ask GetSBOM next (the gatekeeper, on every
	// admission) skip that round trip for an artifact without one. If the
	// store cannot say, the presence stays unspecified and they ask
	// GetSBOM, which fails the same way: nobody reads "no SBOM" from an
	// error.
	switch has, err := s.cat.HasSBOM(ctx, rec); {
	case err != nil:
		s.logger.WarnContext(ctx, "GetArtifact: SBOM presence unknown", slog.String("artifact", rec.Artifact.Name+"@"+rec.Artifact.Version), slog.Any("error", err))
	case has:
		resp.Sbom = catalogv1.SBOMPresence_SBOM_PRESENCE_ATTACHED
	default:
		resp.Sbom = catalogv1.SBOMPresence_SBOM_PRESENCE_NONE
	}
	return resp, nil
}

// RecordSignature replaces an artifact's current envelope with a new one
// over the same statement; see the proto for the contract. Only the signer
// calls it, from its ResignArtifact. The catalog
// does not verify the new signature: it holds no public keys, and the
// gatekeeper and the CLI verify envelopes against the trust root.
func (s *Server) RecordSignature(ctx context.Context, req *catalogv1.RecordSignatureRequest) (*catalogv1.RecordSignatureResponse, error) {
	actor, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	rec, created, err := s.cat.RecordSignature(ctx, actor, req.GetName(), req.GetVersion(), req.GetEnvelope())
	if err != nil {
		return nil, s.status(ctx, "RecordSignature", err)
	}
	_, keyID, entry := rec.Current()
	s.logger.InfoContext(ctx, "signature recorded", slog.String("artifact", rec.Artifact.Name+"@"+rec.Artifact.Version),
		slog.String("key_id", keyID), slog.Uint64("index", entry.Index), slog.Bool("created", created))
	return &catalogv1.RecordSignatureResponse{Entry: logEntry(entry)}, nil
}

// ListArtifacts lists artifacts with the key id of their current envelope,
// a page at a time.
func (s *Server) ListArtifacts(ctx context.Context, req *catalogv1.ListArtifactsRequest) (*catalogv1.ListArtifactsResponse, error) {
	list, next, err := s.cat.ListArtifacts(ctx, req.GetSignedByKeyId(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, s.status(ctx, "ListArtifacts", err)
	}
	resp := &catalogv1.ListArtifactsResponse{NextPageToken: next, Artifacts: make([]*catalogv1.ListedArtifact, 0, len(list))}
	for _, l := range list {
		resp.Artifacts = append(resp.Artifacts, listed(l))
	}
	return resp, nil
}

// SearchArtifacts returns the logged artifacts matching every filter set,
// a page at a time.
func (s *Server) SearchArtifacts(ctx context.Context, req *catalogv1.SearchArtifactsRequest) (*catalogv1.SearchArtifactsResponse, error) {
	q := catalog.Query{
		Name: req.GetName(), Version: req.GetVersion(), Digest: req.GetDigest(), BuilderID: req.GetBuilderId(),
		SourceRepo: req.GetSourceRepo(), SourceCommit: req.GetSourceCommit(), Channel: req.GetChannel(),
		KeyID: req.GetSignedByKeyId(), Environment: req.GetDeployedEnvironment(),
	}
	list, next, err := s.cat.SearchArtifacts(ctx, q, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, s.status(ctx, "SearchArtifacts", err)
	}
	resp := &catalogv1.SearchArtifactsResponse{NextPageToken: next, Artifacts: make([]*catalogv1.ListedArtifact, 0, len(list))}
	for _, l := range list {
		resp.Artifacts = append(resp.Artifacts, listed(l))
	}
	deployed, err := s.cat.DeploymentsOf(ctx, list)
	if err != nil {
		return nil, s.status(ctx, "SearchArtifacts", err)
	}
	for _, d := range deployed {
		resp.Deployments = append(resp.Deployments, deployment(d))
	}
	return resp, nil
}

func listed(l catalog.Listed) *catalogv1.ListedArtifact {
	return &catalogv1.ListedArtifact{Artifact: artifact(l.Artifact), KeyId: l.KeyID, SignedAt: timestamppb.New(l.SignedAt)}
}

func artifact(a catalog.Artifact) *catalogv1.Artifact {
	return &catalogv1.Artifact{
		Name: a.Name, Version: a.Version, Digest: a.Digest, Size: a.Size, Channel: a.Channel,
		BuilderId: a.BuilderID, SourceRepo: a.SourceRepo, SourceCommit: a.SourceCommit,
		CreatedAt: timestamppb.New(a.CreatedAt),
	}
}

// GetCheckpoint returns the latest signed checkpoint.
func (s *Server) GetCheckpoint(ctx context.Context, _ *catalogv1.GetCheckpointRequest) (*catalogv1.GetCheckpointResponse, error) {
	cp, err := s.cat.Checkpoint(ctx)
	if err != nil {
		return nil, s.status(ctx, "GetCheckpoint", err)
	}
	return &catalogv1.GetCheckpointResponse{Checkpoint: cp}, nil
}

func logEntry(e *catalog.Entry) *catalogv1.LogEntry {
	idx := int64(math.MaxInt64)
	if e.Index <= math.MaxInt64 {
		idx = int64(e.Index)
	}
	return &catalogv1.LogEntry{Index: idx, Leaf: e.Leaf, InclusionProof: e.Proof, Checkpoint: e.Checkpoint}
}

// status is the one mapping from domain errors to gRPC status. Client
// mistakes are returned with their message; back-end failures are logged
// with the trace ID and returned without internal detail.
func (s *Server) status(ctx context.Context, method string, err error) error {
	switch {
	case errors.Is(err, catalog.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, catalog.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, catalog.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, catalog.ErrPermissionDenied):
		return status.Errorf(codes.PermissionDenied, "%s: %v", method, err)
	}
	traceID := trace.SpanContextFromContext(ctx).TraceID().String()
	attrs := []any{slog.String("method", method), slog.String("trace_id", traceID), slog.Any("error", err)}
	switch {
	case errors.Is(err, catalog.ErrIntegrity):
		s.metrics.IntegrityFailures.WithLabelValues("store").Inc()
		s.logger.ErrorContext(ctx, "integrity failure: refusing to answer", attrs...)
		return status.Errorf(codes.Internal, "internal error (trace %s)", traceID)
	case errors.Is(err, translog.ErrNotCosigned):
		s.logger.WarnContext(ctx, "log checkpoint not co-signed by the signer", attrs...)
		return status.Errorf(codes.Unavailable, "the signer has not co-signed the log's checkpoint (signer unreachable or refusing it); retry later (trace %s)", traceID)
	case errors.Is(err, catalog.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		s.logger.WarnContext(ctx, "back end unavailable", attrs...)
		return status.Errorf(codes.Unavailable, "catalog storage or transparency log unavailable; retry later (trace %s)", traceID)
	default:
		s.logger.ErrorContext(ctx, "internal error", attrs...)
		return status.Errorf(codes.Internal, "internal error (trace %s)", traceID)
	}
}
