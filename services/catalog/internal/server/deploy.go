package server

import (
	"context"
	"log/slog"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// RecordDeployment logs and stores a deployment the gatekeeper reports; see
// the proto for the contract.
func (s *Server) RecordDeployment(ctx context.Context, req *catalogv1.RecordDeploymentRequest) (*catalogv1.RecordDeploymentResponse, error) {
	actor, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	ev, d, err := s.cat.RecordDeployment(ctx, actor, catalog.DeploymentReport{
		Name: req.GetName(), Version: req.GetVersion(), Digest: req.GetDigest(), Environment: req.GetEnvironment(),
		DecisionID: req.GetDecisionId(), DecisionEnvelopeSHA256: req.GetDecisionEnvelopeSha256(), ReportedBy: req.GetReportedBy(),
	})
	if err != nil {
		return nil, s.status(ctx, "RecordDeployment", err)
	}
	s.logger.InfoContext(ctx, "deployment recorded", slog.String("artifact", d.Artifact.Name+"@"+d.Artifact.Version),
		slog.String("digest", d.Artifact.Digest), slog.String("environment", d.Deployment.Environment),
		slog.String("decision_id", req.GetDecisionId()), slog.String("reported_by", d.Deployment.Actor), slog.Uint64("index", ev.Entry.Index))
	return &catalogv1.RecordDeploymentResponse{Entry: logEntry(&ev.Entry), Deployment: deployment(*d)}, nil
}
