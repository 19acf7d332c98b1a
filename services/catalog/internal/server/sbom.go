package server

import (
	"context"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// MaxRecvMsgSize is the largest message the catalog accepts: a
// RecordSBOMRequest with a document at sbom.MaxBytes and an envelope at
// its bound (sbom.MaxMessageBytes). Every other request is far smaller.
const MaxRecvMsgSize = sbom.MaxMessageBytes

// Transport sets the gRPC server limits the catalog's API needs: messages
// up to MaxRecvMsgSize. Only members of the trust domain get past the mTLS
// handshake to send one.
func Transport(sc *rpc.ServerConfig) { sc.MaxRecvMsgSize = MaxRecvMsgSize }

// RecordSBOM stores and logs an SBOM the publisher sends; see the proto
// for the contract.
func (s *Server) RecordSBOM(ctx context.Context, req *catalogv1.RecordSBOMRequest) (*catalogv1.RecordSBOMResponse, error) {
	actor, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	b, ev, created, err := s.cat.RecordSBOM(ctx, actor, catalog.SBOMAttachment{
		Name: req.GetName(), Version: req.GetVersion(), Document: req.GetDocument(), Envelope: req.GetEnvelope(), AttachedBy: req.GetAttachedBy(),
	})
	if err != nil {
		return nil, s.status(ctx, "RecordSBOM", err)
	}
	resp := &catalogv1.RecordSBOMResponse{Sbom: sbomProto(b), Created: created}
	if ev != nil {
		resp.Entry = logEntry(&ev.Entry)
	}
	s.logger.InfoContext(ctx, "SBOM recorded", slog.String("artifact", b.Artifact.Name+"@"+b.Artifact.Version),
		slog.String("digest", b.Artifact.Digest), slog.String("document", b.DocumentDigest), slog.Int("components", len(b.Components)),
		slog.String("attached_by", b.AttachedBy), slog.Uint64("index", b.LogIndex), slog.Bool("created", created))
	return resp, nil
}

// GetSBOM returns an artifact's SBOM; see the proto for the contract.
func (s *Server) GetSBOM(ctx context.Context, req *catalogv1.GetSBOMRequest) (*catalogv1.GetSBOMResponse, error) {
	if req.GetDigest() != "" && (req.GetName() != "" || req.GetVersion() != "") {
		return nil, status.Error(codes.InvalidArgument, "give either name and version, or digest, not both")
	}
	b, err := s.cat.GetSBOM(ctx, catalog.SBOMQuery{Name: req.GetName(), Version: req.GetVersion(), Digest: req.GetDigest(), WithDocument: req.GetIncludeDocument()})
	if err != nil {
		return nil, s.status(ctx, "GetSBOM", err)
	}
	return &catalogv1.GetSBOMResponse{Sbom: sbomProto(b)}, nil
}

func sbomProto(b *catalog.SBOM) *catalogv1.SBOM {
	out := &catalogv1.SBOM{
		Name: b.Artifact.Name, Version: b.Artifact.Version, Digest: b.Artifact.Digest, Format: b.Format, DocumentDigest: b.DocumentDigest,
		AttachedBy: b.AttachedBy, AttachedAt: timestamppb.New(b.AttachedAt), Envelope: b.Envelope, KeyId: b.KeyID,
		LogIndex: int64(b.LogIndex), Document: b.Document, Components: make([]*catalogv1.Component, len(b.Components)),
	}
	for i, c := range b.Components {
		out.Components[i] = &catalogv1.Component{Purl: c.PURL, Name: c.Name, Version: c.Version, License: c.License}
	}
	return out
}

// RecordSBOM forwards to the writer.
func (f *Follower) RecordSBOM(ctx context.Context, req *catalogv1.RecordSBOMRequest) (*catalogv1.RecordSBOMResponse, error) {
	c, ctx, err := f.forward(ctx)
	if err != nil {
		return nil, err
	}
	return c.RecordSBOM(ctx, req, sbom.CallOptions()...)
}

func (w *Switch) RecordSBOM(ctx context.Context, r *catalogv1.RecordSBOMRequest) (*catalogv1.RecordSBOMResponse, error) {
	return w.get().RecordSBOM(ctx, r)
}

func (w *Switch) GetSBOM(ctx context.Context, r *catalogv1.GetSBOMRequest) (*catalogv1.GetSBOMResponse, error) {
	return w.get().GetSBOM(ctx, r)
}
