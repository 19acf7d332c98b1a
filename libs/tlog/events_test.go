package tlog_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/tlog"
)

func TestMayEmit(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("custody.test")
	id := func(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }
	tests := []struct {
		typ    string
		caller string
		want   error
	}{
		{tlog.TypeAdmissionDecided, "spiffe://custody.test/service/gatekeeper", nil},
		{"deployment.recorded", "spiffe://custody.test/service/gatekeeper", nil},
		{tlog.TypeRollbackRequested, "spiffe://custody.test/service/gatekeeper", nil},
		{tlog.TypeRollbackApproved, "spiffe://custody.test/service/gatekeeper", nil},
		{tlog.TypeRollbackGranted, "spiffe://custody.test/service/gatekeeper", nil},
		{tlog.TypeRollbackGranted, "spiffe://custody.test/service/signer", tlog.ErrNotEmitter},
		{tlog.TypeRollbackGranted, "spiffe://custody.test/edge/dev", tlog.ErrNotEmitter},
		{tlog.TypeApprovalApproved, "spiffe://custody.test/service/signer", nil},
		{tlog.TypeKeyRevoked, "spiffe://custody.test/service/signer", nil},
		{tlog.TypeCheckpointCosignRefused, "spiffe://custody.test/service/signer", nil},
		{tlog.TypeArtifactResigned, "spiffe://custody.test/service/signer", nil},
		{tlog.TypeArtifactResigned, "spiffe://custody.test/service/publisher", tlog.ErrNotEmitter},
		{tlog.TypeArtifactPublished, "spiffe://custody.test/service/publisher", nil},
		// An artifact revocation: the gatekeeper only, not the publisher
		// whose artifact.* family it would otherwise fall in.
		{tlog.TypeArtifactRevoked, "spiffe://custody.test/service/gatekeeper", nil},
		{tlog.TypeArtifactRevoked, "spiffe://custody.test/service/publisher", tlog.ErrNotEmitter},
		{tlog.TypeArtifactRevoked, "spiffe://custody.test/service/signer", tlog.ErrNotEmitter},
		{tlog.TypeArtifactRevoked, "spiffe://custody.test/admin/ops", tlog.ErrNotEmitter},
		{tlog.TypeArtifactRevoked, "spiffe://custody.test/security/triage", tlog.ErrNotEmitter},
		{tlog.TypeArtifactRevoked, "spiffe://custody.test/edge/dev", tlog.ErrNotEmitter},
		{tlog.TypeArtifactRevoked, "spiffe://other.test/service/gatekeeper", tlog.ErrNotEmitter},
		{tlog.TypeSBOMAttached, "spiffe://custody.test/service/publisher", nil},
		{tlog.TypeSBOMAttached, "spiffe://custody.test/edge/dev", tlog.ErrNotEmitter},
		{tlog.TypeSBOMAttached, "spiffe://custody.test/service/gatekeeper", tlog.ErrNotEmitter},
		{tlog.TypeSBOMAttached, "spiffe://custody.test/builder/ci", tlog.ErrNotEmitter},
		{"token.issued", "spiffe://custody.test/service/cdn-broker", nil},
		{"edge.purged", "spiffe://custody.test/edge/dev", nil},
		{"edge.purged", "spiffe://custody.test/edge", tlog.ErrNotEmitter},
		{"edge.purged", "spiffe://custody.test/edgeway/x", tlog.ErrNotEmitter},
		// ATTACKS.md #33: an edge writes the signer's and the gatekeeper's events.
		{tlog.TypeApprovalApproved, "spiffe://custody.test/edge/dev", tlog.ErrNotEmitter},
		{tlog.TypeAdmissionDecided, "spiffe://custody.test/edge/dev", tlog.ErrNotEmitter},
		{tlog.TypeKeyRevoked, "spiffe://custody.test/edge/dev", tlog.ErrNotEmitter},
		{tlog.TypeTrustRootPublished, "spiffe://custody.test/edge/dev", tlog.ErrNotEmitter},
		{tlog.TypeAdmissionDecided, "spiffe://custody.test/service/publisher", tlog.ErrNotEmitter},
		// Advisories: security identities and admins, nobody else.
		{tlog.TypeAdvisoriesImported, "spiffe://custody.test/security/osv-sync", nil},
		{tlog.TypeAdvisoriesImported, "spiffe://custody.test/admin/ops", nil},
		{tlog.TypeAdvisoriesImported, "spiffe://custody.test/security", tlog.ErrNotEmitter},
		{tlog.TypeAdvisoriesImported, "spiffe://custody.test/securityx/a", tlog.ErrNotEmitter},
		{tlog.TypeAdvisoriesImported, "spiffe://custody.test/service/gatekeeper", tlog.ErrNotEmitter},
		{tlog.TypeAdvisoriesImported, "spiffe://custody.test/approver/a", tlog.ErrNotEmitter},
		{tlog.TypeAdvisoriesImported, "spiffe://custody.test/builder/ci", tlog.ErrNotEmitter},
		{tlog.TypeAdvisoriesImported, "spiffe://other.test/security/osv-sync", tlog.ErrNotEmitter},
		{tlog.TypeAdvisoriesImported, "spiffe://other.test/admin/ops", tlog.ErrNotEmitter},
		// VEX: security identities only, not even admins.
		{tlog.TypeVEXAdded, "spiffe://custody.test/security/triage", nil},
		{tlog.TypeVEXAdded, "spiffe://custody.test/admin/ops", tlog.ErrNotEmitter},
		{tlog.TypeVEXAdded, "spiffe://custody.test/security", tlog.ErrNotEmitter},
		{tlog.TypeVEXAdded, "spiffe://custody.test/service/gatekeeper", tlog.ErrNotEmitter},
		{tlog.TypeVEXAdded, "spiffe://custody.test/builder/ci", tlog.ErrNotEmitter},
		{tlog.TypeVEXAdded, "spiffe://custody.test/edge/dev", tlog.ErrNotEmitter},
		{tlog.TypeVEXAdded, "spiffe://other.test/security/triage", tlog.ErrNotEmitter},
		// Same path, another trust domain.
		{tlog.TypeAdmissionDecided, "spiffe://other.test/service/gatekeeper", tlog.ErrNotEmitter},
		// Deny by default: no family covers these.
		{"checkpoint.published", "spiffe://custody.test/service/signer", tlog.ErrUnknownType},
		{"admission", "spiffe://custody.test/service/gatekeeper", tlog.ErrUnknownType},
		{"admissionx.decided", "spiffe://custody.test/service/gatekeeper", tlog.ErrUnknownType},
		{"test.happened", "spiffe://custody.test/admin/ops", tlog.ErrUnknownType},
	}
	for _, tt := range tests {
		t.Run(tt.typ+" by "+tt.caller, func(t *testing.T) {
			err := tlog.MayEmit(td, tt.typ, id(tt.caller))
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("MayEmit = %v, want %v", err, tt.want)
			}
			if err != nil && (!strings.Contains(err.Error(), tt.typ) || !strings.Contains(err.Error(), tt.caller)) {
				t.Errorf("error %q does not name the type and the caller", err)
			}
		})
	}
}

func TestEveryRuleFamilyIsAValidType(t *testing.T) {
	for _, r := range tlog.Rules() {
		typ := strings.Replace(string(r.Family), "*", "x", 1)
		if !tlog.ValidType(typ) {
			t.Errorf("family %q: %q is not a valid type", r.Family, typ)
		}
		if e, ok := tlog.EmitterOf(typ); !ok || e != r.Emitter {
			t.Errorf("EmitterOf(%q) = %v, %v; want %v", typ, e, ok, r.Emitter)
		}
	}
}
