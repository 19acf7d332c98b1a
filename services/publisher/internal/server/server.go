// Package server is the publisher's gRPC API: streaming upload into the
// content-addressed store, signing and recording, and verified download.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/artifact"
	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/services/publisher/internal/bindings"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
	"github.com/custody-dev/custody/services/publisher/internal/signing"
)

// ChunkSize is the largest upload chunk accepted and the download chunk size.
const ChunkSize = 1 << 20

// MaxBlobSize bounds one artifact.
const MaxBlobSize = 64 << 30

// Domain errors mapped in toStatus.
var (
	errInvalid     = errors.New("invalid request")
	errUnavailable = errors.New("dependency unavailable")
	// errNotSigned: the signer refused for now (approvals missing or
	// rejected); its message says what to do.
	errNotSigned = errors.New("the signer did not sign")
)

// Policy is who may call what; see docs/services.md.
func Policy(td spiffeid.TrustDomain) rpc.Policy {
	sd := publisherv1.PublisherService_ServiceDesc
	under := func(p string) rpc.Rule { return rpc.Under{TrustDomain: td, Prefix: p} }
	return rpc.Policy{
		rpc.Method(sd, "Upload"):     {under("/builder")},
		rpc.Method(sd, "Download"):   {under("/edge"), under("/deployer"), under("/admin")},
		rpc.Method(sd, "VerifyBlob"): {rpc.ID(spiffeid.RequireFromPath(td, "/service/gatekeeper")), under("/admin")},
	}
}

// Blobs is the content-addressed blob store (sealed.Store: encrypted at
// rest, every read authenticated). Open reads from offset; size is the
// whole blob's.
type Blobs interface {
	Put(ctx context.Context, r io.Reader, maxSize int64) (digest string, size int64, err error)
	Open(ctx context.Context, digest string, offset int64) (r io.ReadCloser, size int64, err error)
	Verify(ctx context.Context, digest string) (int64, error)
}

var _ Blobs = (*sealed.Store)(nil)

// Server implements publisherv1.PublisherServiceServer.
type Server struct {
	publisherv1.UnimplementedPublisherServiceServer
	blobs    Blobs
	bindings *bindings.Store
	signer   signerv1.SignerServiceClient
	catalog  catalogv1.CatalogServiceClient
	logger   *slog.Logger
	metrics  *telemetry.Metrics
	now      func() time.Time
	batcher  *signing.Batcher // nil: one SignArtifact call per upload
}

// SetBatcher has concurrent uploads signed in SignArtifacts batches. Call it
// before serving.
func (s *Server) SetBatcher(b *signing.Batcher) { s.batcher = b }

// New returns the publisher API.
func New(blobs Blobs, b *bindings.Store, signer signerv1.SignerServiceClient, catalog catalogv1.CatalogServiceClient, logger *slog.Logger, metrics *telemetry.Metrics) *Server {
	return &Server{blobs: blobs, bindings: b, signer: signer, catalog: catalog, logger: logger, metrics: metrics, now: time.Now}
}

// streamReader turns upload chunks into a reader, enforcing chunk and total
// sizes.
type streamReader struct {
	stream publisherv1.PublisherService_UploadServer
	buf    []byte
	total  int64
	limit  int64 // expected size, or 0
}

func (r *streamReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.stream.Recv()
		if errors.Is(err, io.EOF) && r.limit > 0 && r.total != r.limit {
			// Refuse before the store links the blob: a short upload
			// must leave nothing behind.
			return 0, fmt.Errorf("%w: received %d bytes, the header declared %d", errInvalid, r.total, r.limit)
		}
		if err != nil {
			return 0, err // io.EOF ends the blob
		}
		chunk := msg.GetChunk()
		if msg.GetHeader() != nil {
			return 0, fmt.Errorf("%w: a second header after the data started", errInvalid)
		}
		if len(chunk) > ChunkSize {
			return 0, fmt.Errorf("%w: chunk of %d bytes, limit %d", errInvalid, len(chunk), ChunkSize)
		}
		r.total += int64(len(chunk))
		if r.limit > 0 && r.total > r.limit {
			return 0, fmt.Errorf("%w: more bytes than the declared size %d", errInvalid, r.limit)
		}
		r.buf = chunk
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func validateHeader(h *publisherv1.UploadHeader) error {
	var errs []string
	if !artifact.ValidName(h.GetName()) {
		errs = append(errs, fmt.Sprintf("name %q: want 1-%d letters, digits, '.', '_', '-' or '/', starting with a letter or digit", h.GetName(), artifact.MaxNameLen))
	}
	if !artifact.ValidVersion(h.GetVersion()) {
		errs = append(errs, fmt.Sprintf("version %q: want 1-%d letters, digits, '.', '_', '-' or '+', starting with a letter or digit", h.GetVersion(), artifact.MaxVersionLen))
	}
	if !artifact.ValidChannel(h.GetChannel()) {
		errs = append(errs, fmt.Sprintf("channel %q: required, up to %d letters, digits, '.', '_' or '-'", h.GetChannel(), artifact.MaxChannelLen))
	}
	if h.GetSize() < 0 || h.GetSize() > MaxBlobSize {
		errs = append(errs, fmt.Sprintf("size %d: want 0 (unknown) up to %d", h.GetSize(), int64(MaxBlobSize)))
	}
	if len(h.GetSourceRepo()) > 1024 || len(h.GetSourceCommit()) > 256 {
		errs = append(errs, "source_repo or source_commit too long")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", errInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// Upload stores, binds, signs and records one artifact.
func (s *Server) Upload(stream publisherv1.PublisherService_UploadServer) error {
	ctx := stream.Context()
	started := s.now()
	caller, _ := rpc.CallerID(ctx)
	first, err := stream.Recv()
	if err != nil {
		return toStatus(fmt.Errorf("%w: read header: %v", errInvalid, err))
	}
	h := first.GetHeader()
	if h == nil {
		return toStatus(fmt.Errorf("%w: the first message must be the header (name, version, channel)", errInvalid))
	}
	if err := validateHeader(h); err != nil {
		return toStatus(err)
	}
	digest, size, err := s.blobs.Put(ctx, &streamReader{stream: stream, limit: h.GetSize()}, MaxBlobSize)
	if err != nil {
		return toStatus(err)
	}
	if h.GetSize() > 0 && size != h.GetSize() {
		return toStatus(fmt.Errorf("%w: received %d bytes, the header declared %d", errInvalid, size, h.GetSize()))
	}
	created, err := s.bindings.Bind(bindings.Binding{Name: h.GetName(), Version: h.GetVersion(), Digest: digest, Size: size})
	if err != nil {
		return toStatus(err)
	}
	resp, err := s.complete(ctx, h, digest, size, caller, started, created)
	if err != nil {
		return toStatus(err)
	}
	s.logger.InfoContext(ctx, "upload", slog.String("name", h.GetName()), slog.String("version", h.GetVersion()),
		slog.String("digest", digest), slog.Int64("size", size), slog.String("caller", caller.String()),
		slog.Bool("created", resp.GetCreated()), slog.Duration("duration", s.now().Sub(started)))
	return stream.SendAndClose(resp)
}

// complete signs and records a bound artifact. A retry of an upload that
// was bound but not recorded (a crash, a dependency down) finishes the job.
func (s *Server) complete(ctx context.Context, h *publisherv1.UploadHeader, digest string, size int64, caller spiffeid.ID, started time.Time, created bool) (*publisherv1.UploadResponse, error) {
	if !created {
		got, err := s.catalog.GetArtifact(ctx, &catalogv1.GetArtifactRequest{Name: h.GetName(), Version: h.GetVersion()})
		switch status.Code(err) {
		case codes.OK:
			return &publisherv1.UploadResponse{Digest: digest, Size: size, Envelope: got.GetEnvelope(), LogIndex: got.GetEntry().GetIndex()}, nil
		case codes.NotFound:
		default:
			return nil, fmt.Errorf("%w: catalog: %v: check the catalog is running, then retry the upload", errUnavailable, status.Convert(err).Message())
		}
	}
	statement, err := attest.NewProvenance(attest.Artifact{
		Name: h.GetName(), Version: h.GetVersion(), Digest: digest, Channel: h.GetChannel(),
		BuilderID: caller.String(), SourceRepo: h.GetSourceRepo(), SourceCommit: h.GetSourceCommit(),
		StartedOn: started, FinishedOn: s.now(),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errInvalid, err)
	}
	signReq := &signerv1.SignArtifactRequest{Channel: h.GetChannel(), Statement: statement}
	var signed *signerv1.SignArtifactResponse
	if s.batcher != nil {
		signed, err = s.batcher.SignArtifact(ctx, signReq)
	} else {
		signed, err = s.signer.SignArtifact(ctx, signReq)
	}
	if status.Code(err) == codes.FailedPrecondition {
		return nil, fmt.Errorf("%w: %s; the blob is stored and bound", errNotSigned, status.Convert(err).Message())
	}
	if err != nil {
		return nil, fmt.Errorf("%w: signer: %v: the blob is stored; check the signer is running, then retry the upload", errUnavailable, status.Convert(err).Message())
	}
	rec, err := s.catalog.RecordArtifact(ctx, &catalogv1.RecordArtifactRequest{
		Artifact: &catalogv1.Artifact{Name: h.GetName(), Version: h.GetVersion(), Digest: digest, Size: size, Channel: h.GetChannel(),
			BuilderId: caller.String(), SourceRepo: h.GetSourceRepo(), SourceCommit: h.GetSourceCommit(), CreatedAt: timestamppb.New(started)},
		Envelope: signed.GetEnvelope(),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: catalog: %v: the blob is stored; check the catalog is running, then retry the upload", errUnavailable, status.Convert(err).Message())
	}
	return &publisherv1.UploadResponse{Digest: digest, Size: size, Created: created, Envelope: signed.GetEnvelope(), LogIndex: rec.GetEntry().GetIndex()}, nil
}

// Download streams a blob; a corrupted blob ends the stream with DataLoss.
func (s *Server) Download(req *publisherv1.DownloadRequest, stream publisherv1.PublisherService_DownloadServer) error {
	r, size, err := s.blobs.Open(stream.Context(), req.GetDigest(), 0)
	if err != nil {
		return toStatus(err)
	}
	defer r.Close()
	buf := make([]byte, ChunkSize)
	first := true
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 || first {
			msg := &publisherv1.DownloadResponse{Chunk: buf[:n]}
			if first {
				msg.Size, first = size, false
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return nil
		}
		if rerr != nil {
			return s.integrity(stream.Context(), rerr)
		}
	}
}

// VerifyBlob re-checks a stored blob.
func (s *Server) VerifyBlob(ctx context.Context, req *publisherv1.VerifyBlobRequest) (*publisherv1.VerifyBlobResponse, error) {
	size, err := s.blobs.Verify(ctx, req.GetDigest())
	if err != nil {
		return nil, s.integrity(ctx, err)
	}
	return &publisherv1.VerifyBlobResponse{Size: size}, nil
}

func (s *Server) integrity(ctx context.Context, err error) error {
	if errors.Is(err, sealed.ErrIntegrity) {
		s.metrics.IntegrityFailures.WithLabelValues("store").Inc()
		s.logger.ErrorContext(ctx, "integrity failure", slog.Any("error", err))
	}
	return toStatus(err)
}

// toStatus is the one mapping from domain errors to gRPC codes.
func toStatus(err error) error {
	switch {
	case errors.Is(err, errInvalid), errors.Is(err, sealed.ErrInvalid), errors.Is(err, sealed.ErrTooLarge):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, bindings.ErrConflict):
		return status.Error(codes.AlreadyExists, err.Error()+": publish a new version instead")
	case errors.Is(err, sealed.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, sealed.ErrIntegrity):
		return status.Error(codes.DataLoss, err.Error())
	case errors.Is(err, errUnavailable), errors.Is(err, sealed.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, errNotSigned):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return err // a client stream error, already a status
	}
	return status.Error(codes.Internal, "internal error")
}
