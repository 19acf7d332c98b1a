package server

import (
	"context"
	"maps"

	"google.golang.org/protobuf/types/known/timestamppb"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// ListEvents returns the proven log entries about a digest, a page at a
// time; see the proto for the contract.
func (s *Server) ListEvents(ctx context.Context, req *catalogv1.ListEventsRequest) (*catalogv1.ListEventsResponse, error) {
	entries, next, err := s.cat.ListEvents(ctx, req.GetSubjectDigest(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, s.status(ctx, "ListEvents", err)
	}
	resp := &catalogv1.ListEventsResponse{NextPageToken: next, Entries: make([]*catalogv1.LogEntry, 0, len(entries))}
	for i := range entries {
		resp.Entries = append(resp.Entries, logEntry(&entries[i]))
	}
	return resp, nil
}

// GetLineage walks the dependency graph; see the proto for the contract.
func (s *Server) GetLineage(ctx context.Context, req *catalogv1.GetLineageRequest) (*catalogv1.GetLineageResponse, error) {
	var dir catalog.Direction
	switch req.GetDirection() {
	case catalogv1.LineageDirection_LINEAGE_DIRECTION_UP:
		dir = catalog.Up
	case catalogv1.LineageDirection_LINEAGE_DIRECTION_DOWN:
		dir = catalog.Down
	}
	res, err := s.cat.Lineage(ctx, req.GetNode(), dir, int(req.GetMaxDepth()))
	if err != nil {
		return nil, s.status(ctx, "GetLineage", err)
	}
	resp := &catalogv1.GetLineageResponse{Edges: lineageEdges(res.Edges), Truncated: res.Truncated}
	for _, a := range res.Artifacts {
		resp.Artifacts = append(resp.Artifacts, artifact(a.Artifact))
	}
	for _, d := range res.Deployments {
		resp.Deployments = append(resp.Deployments, deployment(d))
	}
	return resp, nil
}

// GetLineagePath finds a dependency path; see the proto for the contract.
func (s *Server) GetLineagePath(ctx context.Context, req *catalogv1.GetLineagePathRequest) (*catalogv1.GetLineagePathResponse, error) {
	edges, down, err := s.cat.LineagePath(ctx, req.GetFrom(), req.GetTo(), int(req.GetMaxDepth()))
	if err != nil {
		return nil, s.status(ctx, "GetLineagePath", err)
	}
	return &catalogv1.GetLineagePathResponse{Edges: lineageEdges(edges), Downward: down && len(edges) > 0}, nil
}

func lineageEdges(edges []catalog.Edge) []*catalogv1.LineageEdge {
	out := make([]*catalogv1.LineageEdge, 0, len(edges))
	for _, e := range edges {
		out = append(out, &catalogv1.LineageEdge{
			ArtifactDigest: e.Artifact.Digest, ArtifactName: e.Artifact.Name, ArtifactVersion: e.Artifact.Version,
			Dependency: e.Dependency.Key, Uri: e.Dependency.URI, Name: e.Dependency.Name,
			Digest: maps.Clone(e.Dependency.Digest), Annotations: maps.Clone(e.Dependency.Annotations), Depth: int32(e.Depth),
		})
	}
	return out
}

func deployment(d catalog.Deployed) *catalogv1.Deployment {
	return &catalogv1.Deployment{Digest: d.Artifact.Digest, Name: d.Artifact.Name, Version: d.Artifact.Version,
		Environment: d.Deployment.Environment, DeployedAt: timestamppb.New(d.Deployment.DeployedAt)}
}
