package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/artifact"
	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/digest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/services/publisher/internal/limits"
)

// SBOM documents held in memory at once, per caller and in all: each is at
// most sbom.MaxBytes, so they bound what SBOMs make the publisher hold to
// 256 MiB, and sbomParsers bounds parsing (about 71 MiB each at the
// bounds, decision 0074).
const (
	sbomsPerCaller = 4
	sbomsTotal     = 32
	sbomParsers    = 2
)

// errNotBuilder: an SBOM attached by another identity than the artifact's
// builder.
var errNotBuilder = errors.New("only the builder that published an artifact may attach its SBOM")

func newSBOMSlots() *limits.Slots {
	return limits.NewSlots("SBOMs", sbomsPerCaller, sbomsTotal, fmt.Sprintf("(fixed: %d per caller)", sbomsPerCaller), fmt.Sprintf("(fixed: %d)", sbomsTotal))
}

func validSBOMSize(n int64) error {
	if n < 1 || n > sbom.MaxBytes {
		return fmt.Errorf("%w: SBOM size %d: want 1 to %d bytes", errInvalid, n, sbom.MaxBytes)
	}
	return nil
}

// readSBOM collects a document of exactly size bytes: first (if any), then
// what next returns until io.EOF. It holds at most size bytes.
func readSBOM(size int64, first []byte, next func() ([]byte, error)) ([]byte, error) {
	if err := validSBOMSize(size); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, size)
	add := func(c []byte) error {
		if len(c) > ChunkSize {
			return fmt.Errorf("%w: SBOM chunk of %d bytes, limit %d", errInvalid, len(c), ChunkSize)
		}
		if int64(len(buf)+len(c)) > size {
			return fmt.Errorf("%w: more SBOM bytes than the declared size %d", errInvalid, size)
		}
		buf = append(buf, c...)
		return nil
	}
	if first != nil {
		if err := add(first); err != nil {
			return nil, err
		}
	}
	for {
		c, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := add(c); err != nil {
			return nil, err
		}
	}
	if int64(len(buf)) != size {
		return nil, fmt.Errorf("%w: received %d SBOM bytes, the header declared %d", errInvalid, len(buf), size)
	}
	return buf, nil
}

// parseSBOM parses a document a builder sent, telling its format.
func (s *Server) parseSBOM(ctx context.Context, doc []byte) (string, error) {
	format, _, err := s.parser.Parse(ctx, doc)
	if errors.Is(err, sbom.ErrInvalid) {
		return "", fmt.Errorf("%w: %v: nothing was attached", errInvalid, err)
	}
	return format, err
}

// attachSBOM has an SBOM statement about name@version and doc signed and
// recorded in the catalog, for caller, who must be the artifact's builder:
// that is checked before anything is signed (the catalog checks it again).
func (s *Server) attachSBOM(ctx context.Context, caller spiffeid.ID, name, version string, doc []byte, format string) (*publisherv1.AttachedSBOM, error) {
	got, err := s.catalog.GetArtifact(ctx, &catalogv1.GetArtifactRequest{Name: name, Version: version})
	if err != nil {
		return nil, catalogErr(err)
	}
	a := got.GetArtifact()
	if a.GetBuilderId() != caller.String() {
		return nil, fmt.Errorf("%w: %s@%s was published by %s, not %s", errNotBuilder, name, version, a.GetBuilderId(), caller)
	}
	st, err := attest.SBOMStatement(attest.SBOMRef{ArtifactName: name, ArtifactDigest: a.GetDigest(), Format: format, DocumentDigest: digest.Of(doc)})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errInvalid, err)
	}
	req := &signerv1.SignArtifactRequest{Channel: a.GetChannel(), Statement: st}
	var signed *signerv1.SignArtifactResponse
	if s.batcher != nil {
		signed, err = s.batcher.SignArtifact(ctx, req)
	} else {
		signed, err = s.signer.SignArtifact(ctx, req)
	}
	if status.Code(err) == codes.FailedPrecondition {
		return nil, fmt.Errorf("%w: %s", errNotSigned, status.Convert(err).Message())
	}
	if err != nil {
		return nil, fmt.Errorf("%w: signer: %v: nothing was attached; check the signer is running, then attach again", errUnavailable, status.Convert(err).Message())
	}
	rec, err := s.catalog.RecordSBOM(ctx, &catalogv1.RecordSBOMRequest{Name: name, Version: version, Document: doc, Envelope: signed.GetEnvelope(),
		AttachedBy: caller.String()}, sbom.CallOptions()...)
	if err != nil {
		return nil, catalogErr(err)
	}
	b := rec.GetSbom()
	return &publisherv1.AttachedSBOM{Format: b.GetFormat(), DocumentDigest: b.GetDocumentDigest(), Components: int32(len(b.GetComponents())),
		Envelope: b.GetEnvelope(), LogIndex: rec.GetEntry().GetIndex(), Created: rec.GetCreated()}, nil
}

// catalogErr passes on the catalog's answers a builder acts on and turns
// the rest into errUnavailable.
func catalogErr(err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied, codes.FailedPrecondition:
		return status.Error(st.Code(), "catalog: "+st.Message())
	}
	return fmt.Errorf("%w: catalog: %v: check the catalog is running, then attach again", errUnavailable, st.Message())
}

// AttachSBOM attaches an SBOM to a published artifact; see the proto for
// the contract. It holds one of the caller's SBOM slots until it returns.
func (s *Server) AttachSBOM(stream publisherv1.PublisherService_AttachSBOMServer) error {
	ctx := stream.Context()
	caller, _ := rpc.CallerID(ctx)
	release, err := s.sboms.Acquire(caller.String())
	if err != nil {
		return toStatus(err)
	}
	defer release()
	rx := limits.NewReceiver(s.limits.Progress, stream.Recv, func(m *publisherv1.AttachSBOMRequest) int { return len(m.GetChunk()) }, nil)
	defer rx.Close()
	first, err := rx.Next(ctx)
	if err != nil {
		return toStatus(fmt.Errorf("%w: read header: %w", errInvalid, err))
	}
	h := first.GetHeader()
	if h == nil {
		return toStatus(fmt.Errorf("%w: the first message must be the header (name, version, size)", errInvalid))
	}
	if !artifact.ValidName(h.GetName()) || !artifact.ValidVersion(h.GetVersion()) {
		return toStatus(fmt.Errorf("%w: name %q and version %q: give a published artifact's", errInvalid, quote.Prefix(h.GetName()), quote.Prefix(h.GetVersion())))
	}
	doc, err := readSBOM(h.GetSize(), nil, func() ([]byte, error) {
		msg, err := rx.Next(ctx)
		if err != nil {
			return nil, err
		}
		if msg.GetHeader() != nil {
			return nil, fmt.Errorf("%w: a second header after the document started", errInvalid)
		}
		return msg.GetChunk(), nil
	})
	if err != nil {
		return s.uploadErr(ctx, caller, err)
	}
	format, err := s.parseSBOM(ctx, doc)
	if err != nil {
		return toStatus(err)
	}
	att, err := s.attachSBOM(ctx, caller, h.GetName(), h.GetVersion(), doc, format)
	if err != nil {
		s.logger.WarnContext(ctx, "SBOM not attached", slog.String("artifact", h.GetName()+"@"+h.GetVersion()), slog.String("caller", caller.String()), slog.Any("error", err))
		return toStatus(err)
	}
	s.logSBOM(ctx, h.GetName(), h.GetVersion(), caller, att)
	return stream.SendAndClose(&publisherv1.AttachSBOMResponse{Sbom: att})
}

func (s *Server) logSBOM(ctx context.Context, name, version string, caller spiffeid.ID, att *publisherv1.AttachedSBOM) {
	s.logger.InfoContext(ctx, "SBOM attached", slog.String("name", name), slog.String("version", version), slog.String("caller", caller.String()),
		slog.String("format", att.GetFormat()), slog.String("document", att.GetDocumentDigest()), slog.Int("components", int(att.GetComponents())),
		slog.Bool("created", att.GetCreated()), slog.Int64("log_index", att.GetLogIndex()))
}

// isSBOMChunk reports whether m is an SBOM chunk of an upload.
func isSBOMChunk(m *publisherv1.UploadRequest) bool {
	_, ok := m.GetMsg().(*publisherv1.UploadRequest_SbomChunk)
	return ok
}
