package server

import (
	"context"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// AddVex logs an OpenVEX document about an artifact; see the proto for the
// contract.
func (s *Server) AddVex(ctx context.Context, req *catalogv1.AddVexRequest) (*catalogv1.AddVexResponse, error) {
	actor, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	added, err := s.cat.AddVEX(ctx, actor, catalog.VEXSubmission{Name: req.GetName(), Version: req.GetVersion(), Digest: req.GetDigest(), Document: req.GetDocument()})
	if err != nil {
		return nil, s.status(ctx, "AddVex", err)
	}
	a := added.Artifact
	return &catalogv1.AddVexResponse{Entry: logEntry(&added.Event.Entry), Name: a.Name, Version: a.Version, Digest: a.Digest,
		Statements: uint32(added.Statements)}, nil
}

// ListVex returns the vex.added entries about an artifact; see the proto
// for the contract.
func (s *Server) ListVex(ctx context.Context, req *catalogv1.ListVexRequest) (*catalogv1.ListVexResponse, error) {
	entries, truncated, err := s.cat.ListVEX(ctx, req.GetName(), req.GetVersion(), req.GetDigest())
	if err != nil {
		return nil, s.status(ctx, "ListVex", err)
	}
	resp := &catalogv1.ListVexResponse{Truncated: truncated, Entries: make([]*catalogv1.LogEntry, 0, len(entries))}
	for i := range entries {
		resp.Entries = append(resp.Entries, logEntry(&entries[i]))
	}
	return resp, nil
}

// AddVex forwards to the writer.
func (f *Follower) AddVex(ctx context.Context, req *catalogv1.AddVexRequest) (*catalogv1.AddVexResponse, error) {
	c, ctx, err := f.forward(ctx)
	if err != nil {
		return nil, err
	}
	return c.AddVex(ctx, req)
}

// AddVex serves the current server.
func (w *Switch) AddVex(ctx context.Context, r *catalogv1.AddVexRequest) (*catalogv1.AddVexResponse, error) {
	return w.get().AddVex(ctx, r)
}

// ListVex serves the current server.
func (w *Switch) ListVex(ctx context.Context, r *catalogv1.ListVexRequest) (*catalogv1.ListVexResponse, error) {
	return w.get().ListVex(ctx, r)
}
