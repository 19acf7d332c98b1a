package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
)

// GetEntries returns log entries; see the proto for the contract.
func (s *Server) GetEntries(ctx context.Context, req *catalogv1.GetEntriesRequest) (*catalogv1.GetEntriesResponse, error) {
	if s.ledger == nil {
		return nil, status.Error(codes.Unimplemented, "log reads are not served by this catalog")
	}
	entries, cp, err := s.ledger.Entries(ctx, req.GetStart(), int(req.GetPageSize()))
	if err != nil {
		return nil, s.status(ctx, "GetEntries", err)
	}
	return &catalogv1.GetEntriesResponse{Entries: entries, Checkpoint: cp}, nil
}

// GetInclusionProof returns an entry with its inclusion proof; see the
// proto for the contract.
func (s *Server) GetInclusionProof(ctx context.Context, req *catalogv1.GetInclusionProofRequest) (*catalogv1.GetInclusionProofResponse, error) {
	if s.ledger == nil {
		return nil, status.Error(codes.Unimplemented, "log reads are not served by this catalog")
	}
	leaf, size, proof, cp, err := s.ledger.InclusionProof(ctx, req.GetIndex(), req.GetTreeSize())
	if err != nil {
		return nil, s.status(ctx, "GetInclusionProof", err)
	}
	return &catalogv1.GetInclusionProofResponse{Leaf: leaf, TreeSize: size, InclusionProof: proof, Checkpoint: cp}, nil
}

// GetConsistencyProof returns a consistency proof; see the proto for the
// contract.
func (s *Server) GetConsistencyProof(ctx context.Context, req *catalogv1.GetConsistencyProofRequest) (*catalogv1.GetConsistencyProofResponse, error) {
	if s.ledger == nil {
		return nil, status.Error(codes.Unimplemented, "log reads are not served by this catalog")
	}
	size, proof, cp, err := s.ledger.ConsistencyProof(ctx, req.GetFirstSize(), req.GetSecondSize())
	if err != nil {
		return nil, s.status(ctx, "GetConsistencyProof", err)
	}
	return &catalogv1.GetConsistencyProofResponse{FirstSize: req.GetFirstSize(), SecondSize: size, ConsistencyProof: proof, Checkpoint: cp}, nil
}
