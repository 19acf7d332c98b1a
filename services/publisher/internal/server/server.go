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
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/services/publisher/internal/bindings"
	"github.com/custody-dev/custody/services/publisher/internal/limits"
	"github.com/custody-dev/custody/services/publisher/internal/resume"
	"github.com/custody-dev/custody/services/publisher/internal/retention"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
	"github.com/custody-dev/custody/services/publisher/internal/signing"
)

// ChunkSize is the largest upload chunk accepted and the download chunk size.
const ChunkSize = 1 << 20

// MaxRecvMsgSize is the largest gRPC message the publisher accepts: one
// chunk and its framing, or a header.
const MaxRecvMsgSize = ChunkSize + 64<<10

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
		rpc.Method(sd, "Upload"):          {under("/builder")},
		rpc.Method(sd, "GetUploadStatus"): {under("/builder")},
		// Any builder reaches AttachSBOM; only the artifact's own builder
		// gets an SBOM attached (checked before signing, and again by the
		// catalog).
		rpc.Method(sd, "AttachSBOM"): {under("/builder")},
		// Deployers get bytes only through an edge, with a token the broker
		// issued for an allow decision (ATTACKS.md #38); admins for backup
		// and inspection.
		rpc.Method(sd, "Download"):   {under("/edge"), under("/admin")},
		rpc.Method(sd, "VerifyBlob"): {rpc.ID(spiffeid.RequireFromPath(td, "/service/gatekeeper")), under("/admin")},
	}
}

// Blobs is the encrypted blob store the server reads and writes.
type Blobs interface {
	Put(ctx context.Context, r io.Reader, maxSize int64) (digest string, size int64, err error)
	Open(ctx context.Context, digest string, offset int64) (r io.ReadCloser, size int64, err error)
	Verify(ctx context.Context, digest string) (int64, error)
	// PutSealed stores a resumable upload its partial sealed already.
	PutSealed(ctx context.Context, b sealed.Sealed) (digest string, size int64, err error)
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

	limits    Limits
	uploads   *limits.Slots
	downloads *limits.Slots
	sboms     *limits.Slots // SBOM documents held
	parser    *sbom.Parser
	resume    *resume.Store     // nil: uploads are not resumable
	retention *retention.Runner // nil: nothing is ever deleted
}

// Limits bound what callers may hold open; see docs/services.md for the
// flags that set them.
type Limits struct {
	// MaxSize bounds one artifact, in bytes.
	MaxSize int64
	// UploadsPerCaller and UploadsTotal bound concurrent uploads (from the
	// first message until the response, signing included).
	UploadsPerCaller, UploadsTotal int
	// DownloadsPerCaller and DownloadsTotal bound concurrent downloads.
	DownloadsPerCaller, DownloadsTotal int
	// Progress is the rate an upload must keep; one that falls behind is
	// aborted and its bytes removed.
	Progress limits.Progress
	// SendProgress is the rate a download's reader must take bytes at; one
	// that stops reading is cut and its file and slot released.
	SendProgress limits.Progress
}

// DefaultLimits are the limits of a publisher started without flags.
func DefaultLimits() Limits {
	return Limits{
		MaxSize:          64 << 30,
		UploadsPerCaller: 16, UploadsTotal: 256,
		DownloadsPerCaller: 64, DownloadsTotal: 512,
		Progress:     limits.Progress{Window: time.Minute, MinRate: 1 << 10},
		SendProgress: limits.Progress{Window: time.Minute, MinRate: 1 << 10, What: "download"},
	}
}

// SetLimits replaces the limits. Call it before serving.
func (s *Server) SetLimits(l Limits) {
	s.limits = l
	s.uploads = limits.NewSlots("uploads", l.UploadsPerCaller, l.UploadsTotal, "--max-uploads-per-caller", "--max-uploads")
	s.downloads = limits.NewSlots("downloads", l.DownloadsPerCaller, l.DownloadsTotal, "--max-downloads-per-caller", "--max-downloads")
}

// SetResume makes uploads with an upload id resumable, their partial bytes
// kept in r. Call it before serving.
func (s *Server) SetResume(r *resume.Store) { s.resume = r }

// SetRetention has uploads bind only blobs that retention has not deleted
// meanwhile. Call it before serving.
func (s *Server) SetRetention(r *retention.Runner) { s.retention = r }

// SetBatcher has concurrent uploads signed in SignArtifacts batches. Call it
// before serving.
func (s *Server) SetBatcher(b *signing.Batcher) { s.batcher = b }

// New returns the publisher API.
func New(blobs Blobs, b *bindings.Store, signer signerv1.SignerServiceClient, catalog catalogv1.CatalogServiceClient, logger *slog.Logger, metrics *telemetry.Metrics) *Server {
	s := &Server{blobs: blobs, bindings: b, signer: signer, catalog: catalog, logger: logger, metrics: metrics, now: time.Now,
		sboms: newSBOMSlots(), parser: sbom.NewParser(sbomParsers)}
	s.SetLimits(DefaultLimits())
	return s
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
	deps, err := dependencies(h)
	if err != nil {
		return nil, err
	}
	statement, err := attest.NewProvenance(attest.Artifact{
		Name: h.GetName(), Version: h.GetVersion(), Digest: digest, Channel: h.GetChannel(),
		BuilderID: caller.String(), SourceRepo: h.GetSourceRepo(), SourceCommit: h.GetSourceCommit(),
		StartedOn: started, FinishedOn: s.now(), Dependencies: deps,
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
	case errors.Is(err, errInvalid), errors.Is(err, sealed.ErrInvalid), errors.Is(err, resume.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, limits.ErrExhausted):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return status.Error(codes.ResourceExhausted, "the publisher's disk is full: "+err.Error()+": nothing was stored; free space on it (or raise its quota), then retry")
	case errors.Is(err, sealed.ErrTooLarge):
		return status.Error(codes.ResourceExhausted, err.Error()+": the publisher's limit is --max-artifact-size")
	case errors.Is(err, limits.ErrSuperseded):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, resume.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, retention.ErrNoPolicy), errors.Is(err, retention.ErrBusy):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, retention.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error()+": nothing more was deleted; check the catalog is running, then run retention again")
	case errors.Is(err, bindings.ErrDeleted):
		return status.Error(codes.FailedPrecondition, err.Error()+": a deleted name@version is never bound again; publish a new version")
	case errors.Is(err, bindings.ErrConflict):
		return status.Error(codes.AlreadyExists, err.Error()+": publish a new version instead")
	case errors.Is(err, sealed.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, sealed.ErrIntegrity):
		return status.Error(codes.DataLoss, err.Error())
	case errors.Is(err, errUnavailable), errors.Is(err, sealed.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, errNotBuilder):
		return status.Error(codes.PermissionDenied, err.Error())
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

// Transport sets the gRPC server limits the publisher's API needs: one
// chunk per message. cmd/publisher adds the configured stream and keepalive
// limits.
func Transport(sc *rpc.ServerConfig) {
	sc.MaxRecvMsgSize = MaxRecvMsgSize
	sc.InitialWindowSize, sc.InitialConnWindowSize = streamWindow, connWindow
	sc.ReadBufferSize, sc.WriteBufferSize = socketBuffer, socketBuffer
}

// Flow-control windows and socket buffers for bulk transfers. A fixed
// stream window also bounds what one stalled upload can make the publisher
// buffer (gRPC's dynamic windows grow to 16 MiB per stream).
const (
	streamWindow = 2 << 20
	connWindow   = 8 << 20
	socketBuffer = 256 << 10
)

// DialOptions are the client options for moving artifacts to and from the
// publisher at full speed.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(socketBuffer), grpc.WithWriteBufferSize(socketBuffer),
	}
}
