package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/tlog"
)

// TestEdgeCannotForgeEvents is the hole issue 9 opened with, on the real dev
// stack: an edge's identity appends every event type that is not its own
// (approvals, admissions, key revocations, trust roots, and the rest of the
// emitter table) and each is refused naming the edge, nothing of it
// reaches the log, and the edge's own edge.* events are still accepted.
func TestEdgeCannotForgeEvents(t *testing.T) {
	s := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	edge := catalogv1.NewCatalogServiceClient(s.connAsService("edge", "catalog"))
	subject := "sha256:" + strings.Repeat("e", 64)
	foreign := []string{
		tlog.TypeArtifactPublished, tlog.TypeArtifactResigned, tlog.TypeArtifactRetentionDeleted, tlog.TypeSBOMAttached,
		tlog.TypeApprovalRequested, tlog.TypeApprovalApproved, tlog.TypeApprovalRejected, tlog.TypeApprovalSigned,
		tlog.TypeKeyRotated, tlog.TypeKeyRevoked, tlog.TypeTrustRootPublished, tlog.TypeCheckpointCosignRefused,
		tlog.TypePurgeRequested, tlog.TypePurgeConfirmed, tlog.TypePurgeFailed, tlog.TypeTokenIssued,
		tlog.TypeAdmissionDecided, tlog.TypeDeploymentRecorded, tlog.TypeRollbackRequested, tlog.TypeRollbackApproved,
		tlog.TypeRollbackGranted, tlog.TypeAdvisoriesImported,
		"signing.requested", "pause.on", "killswitch.on", "finding.raised", "custom.event",
	}
	// These are written only by their own RPCs, with their rows: AppendEvent
	// refuses them from anybody.
	ownRPC := map[string]bool{tlog.TypeSBOMAttached: true, tlog.TypeDeploymentRecorded: true, tlog.TypeAdvisoriesImported: true}
	for _, typ := range foreign {
		_, err := edge.AppendEvent(ctx, &catalogv1.AppendEventRequest{Type: typ, SubjectDigest: subject,
			Details: []byte(`{"forged":true}`), Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED})
		if ownRPC[typ] {
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("edge appends %s: %v, want InvalidArgument (only its own RPC logs it)", typ, err)
			}
			continue
		}
		wantDenied(t, "edge appends "+typ, err, "/edge/")
	}
	if _, err := edge.AppendEvent(ctx, &catalogv1.AppendEventRequest{Type: "edge.cache-evicted", SubjectDigest: subject,
		Details: []byte(`{"reason":"test"}`), Wait: catalogv1.AppendWait_APPEND_WAIT_PROVED}); err != nil {
		t.Fatalf("edge appends its own edge.cache-evicted: %v", err)
	}
	auditor := catalogv1.NewCatalogServiceClient(s.conn("auditor", "catalog"))
	resp, err := auditor.ListEvents(ctx, &catalogv1.ListEventsRequest{SubjectDigest: subject})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range resp.GetEntries() {
		parsed, err := tlog.ParseEntry(e.GetLeaf())
		if err != nil {
			t.Fatalf("logged entry %d: %v", e.GetIndex(), err)
		}
		types = append(types, parsed.Type)
	}
	if len(types) != 1 || types[0] != "edge.cache-evicted" {
		t.Fatalf("logged about the subject: %v, want only the edge's own edge.cache-evicted", types)
	}
}
