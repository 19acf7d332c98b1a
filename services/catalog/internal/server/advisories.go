package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// ImportAdvisories receives a set of OSV documents and imports it; see the
// proto for the contract. The set is bounded while it is received
// (catalog.MaxImportAdvisories documents, catalog.MaxImportBytes in all),
// before the catalog parses it.
func (s *Server) ImportAdvisories(stream grpc.ClientStreamingServer[catalogv1.ImportAdvisoriesRequest, catalogv1.ImportAdvisoriesResponse]) error {
	ctx := stream.Context()
	actor, err := s.caller(ctx)
	if err != nil {
		return err
	}
	// One import at a time, taken before the set is received, so that
	// two callers never hold two sets in memory.
	if !s.importing.TryLock() {
		return status.Error(codes.Unavailable, catalog.ErrImportRunning.Error())
	}
	defer s.importing.Unlock()
	docs, err := receiveDocuments(stream, s.importReceive)
	if err != nil {
		return err
	}
	imp, created, err := s.cat.ImportAdvisories(ctx, actor, docs)
	if errors.Is(err, catalog.ErrImportRunning) {
		return status.Error(codes.Unavailable, err.Error())
	}
	if err != nil {
		return s.status(ctx, "ImportAdvisories", err)
	}
	s.logger.InfoContext(ctx, "advisories imported", slog.String("set_digest", imp.SetDigest), slog.Int("count", imp.Count),
		slog.Int("added", imp.Added), slog.Int("updated", imp.Updated), slog.Bool("created", created),
		slog.String("by", actor), slog.Uint64("index", imp.LogIndex))
	return stream.SendAndClose(&catalogv1.ImportAdvisoriesResponse{
		Entry:   logEntry(&catalog.Entry{Index: imp.LogIndex, Leaf: imp.Leaf}),
		Created: created, SetDigest: imp.SetDigest,
		Count: uint32(imp.Count), Added: uint32(imp.Added), Updated: uint32(imp.Updated), Unchanged: uint32(imp.Unchanged),
	})
}

// MaxImportReceive bounds how long a caller may take to send a set: the
// import lock is held meanwhile.
const MaxImportReceive = 10 * time.Minute

// receiveDocuments reads the stream to its end, refusing it as soon as it
// goes over a bound or takes longer than limit.
func receiveDocuments(stream grpc.ClientStreamingServer[catalogv1.ImportAdvisoriesRequest, catalogv1.ImportAdvisoriesResponse], limit time.Duration) ([][]byte, error) {
	type result struct {
		docs [][]byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		docs, err := receiveAll(stream)
		done <- result{docs, err}
	}()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.docs, r.err
	case <-timer.C:
		// Returning ends the RPC, which ends the Recv the goroutine is in.
		return nil, status.Errorf(codes.DeadlineExceeded, "the set was not received within %v: send it faster or in parts", limit)
	}
}

func receiveAll(stream grpc.ClientStreamingServer[catalogv1.ImportAdvisoriesRequest, catalogv1.ImportAdvisoriesResponse]) ([][]byte, error) {
	var (
		docs  [][]byte
		total int
	)
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		for _, d := range req.GetDocuments() {
			total += len(d)
			docs = append(docs, d)
			if len(docs) > catalog.MaxImportAdvisories {
				return nil, status.Errorf(codes.InvalidArgument, "more than %d advisories in one import", catalog.MaxImportAdvisories)
			}
			if total > catalog.MaxImportBytes {
				return nil, status.Errorf(codes.InvalidArgument, "the documents are more than %d bytes in all: import the set in parts", catalog.MaxImportBytes)
			}
		}
	}
}

// GetAdvisory returns one stored advisory.
func (s *Server) GetAdvisory(ctx context.Context, req *catalogv1.GetAdvisoryRequest) (*catalogv1.GetAdvisoryResponse, error) {
	a, err := s.cat.Advisory(ctx, req.GetId())
	if err != nil {
		return nil, s.status(ctx, "GetAdvisory", err)
	}
	return &catalogv1.GetAdvisoryResponse{Document: a.Document, Digest: a.Digest, Severity: a.Severity, Withdrawn: a.Withdrawn,
		Modified: timestamppb.New(a.Modified), SetDigest: a.SetDigest}, nil
}

// ImportAdvisories relays the stream to the writer.
func (f *Follower) ImportAdvisories(stream grpc.ClientStreamingServer[catalogv1.ImportAdvisoriesRequest, catalogv1.ImportAdvisoriesResponse]) error {
	c, ctx, err := f.forward(stream.Context())
	if err != nil {
		return err
	}
	out, err := c.ImportAdvisories(ctx)
	if err != nil {
		return fmt.Errorf("forward to the log writer: %w", err)
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := out.Send(req); err != nil {
			// The writer refused the stream: its status says why.
			_, err = out.CloseAndRecv()
			return err
		}
	}
	resp, err := out.CloseAndRecv()
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

// ImportAdvisories serves the current server.
func (w *Switch) ImportAdvisories(stream grpc.ClientStreamingServer[catalogv1.ImportAdvisoriesRequest, catalogv1.ImportAdvisoriesResponse]) error {
	return w.get().ImportAdvisories(stream)
}

// GetAdvisory serves the current server.
func (w *Switch) GetAdvisory(ctx context.Context, r *catalogv1.GetAdvisoryRequest) (*catalogv1.GetAdvisoryResponse, error) {
	return w.get().GetAdvisory(ctx, r)
}

// ListFindings returns the findings of an artifact or of an advisory; see
// the proto for the contract.
func (s *Server) ListFindings(ctx context.Context, req *catalogv1.ListFindingsRequest) (*catalogv1.ListFindingsResponse, error) {
	var (
		f   *catalog.Findings
		err error
	)
	byArtifact := req.GetName() != "" || req.GetVersion() != "" || req.GetDigest() != ""
	switch {
	case req.GetAdvisoryId() != "" && !byArtifact:
		f, err = s.cat.ArtifactsAffectedBy(ctx, req.GetAdvisoryId())
	case req.GetAdvisoryId() == "" && byArtifact:
		f, err = s.cat.FindingsOfArtifact(ctx, catalog.SBOMQuery{Name: req.GetName(), Version: req.GetVersion(), Digest: req.GetDigest()})
	default:
		return nil, status.Error(codes.InvalidArgument, "give an artifact (name and version, or digest) or an advisory_id, not both")
	}
	if err != nil {
		return nil, s.status(ctx, "ListFindings", err)
	}
	out := &catalogv1.ListFindingsResponse{Truncated: f.Truncated, Findings: make([]*catalogv1.Finding, len(f.Findings))}
	for i, x := range f.Findings {
		c := x.Match.Component
		out.Findings[i] = &catalogv1.Finding{Name: x.Artifact.Name, Version: x.Artifact.Version, Digest: x.Artifact.Digest,
			AdvisoryId: x.Match.Advisory, Severity: x.Match.Severity.String(),
			Component: &catalogv1.Component{Purl: c.PURL, Name: c.Name, Version: c.Version, License: c.License},
			Reason:    x.Match.Reason, Uncertain: x.Match.Uncertain}
	}
	return out, nil
}

// ListFindings serves the current server.
func (w *Switch) ListFindings(ctx context.Context, r *catalogv1.ListFindingsRequest) (*catalogv1.ListFindingsResponse, error) {
	return w.get().ListFindings(ctx, r)
}
