package command

import (
	"encoding/json"
	"testing"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
)

func TestAdmitJSON(t *testing.T) {
	tests := []struct {
		name string
		resp *gatekeeperv1.AdmitResponse
		want string
	}{{
		name: "allow",
		resp: &gatekeeperv1.AdmitResponse{Decision: gatekeeperv1.Decision_DECISION_ALLOW, Reasons: []string{"signed", "logged"},
			DecisionId: "d1", PolicyDigest: "sha256:p", Digest: "sha256:a", DecisionEnvelope: []byte("{}"), LogIndex: 7},
		want: `{"decision":"allow","ref":"app@1","environment":"prod","digest":"sha256:a","reasons":["signed","logged"],` +
			`"decision_id":"d1","policy_digest":"sha256:p","policy_revision":"","dry_run":false,"real_decision":"allow","input_attestations":[],"log_index":7,"signed":true}`,
	}, {
		// A dry-run allow the policy denied, from a bundle, with the
		// attestations it evaluated.
		name: "dry-run allow",
		resp: &gatekeeperv1.AdmitResponse{Decision: gatekeeperv1.Decision_DECISION_ALLOW, RealDecision: gatekeeperv1.Decision_DECISION_DENY, DryRun: true,
			Reasons: []string{"warning: dry-run: no"}, DecisionId: "d3", PolicyDigest: "dirHash:p", PolicyRevision: "r7", Digest: "sha256:a",
			DecisionEnvelope: []byte("{}"), LogIndex: 8,
			InputAttestations: []*gatekeeperv1.InputAttestation{{Uri: "custody:app@1?attestation=provenance", Digest: map[string]string{"sha256": "ab"}}}},
		want: `{"decision":"allow","ref":"app@1","environment":"prod","digest":"sha256:a","reasons":["warning: dry-run: no"],` +
			`"decision_id":"d3","policy_digest":"dirHash:p","policy_revision":"r7","dry_run":true,"real_decision":"deny",` +
			`"input_attestations":[{"uri":"custody:app@1?attestation=provenance","digest":{"sha256":"ab"}}],"log_index":8,"signed":true}`,
	}, {
		// A deny is never reported with a more permissive real decision.
		name: "deny claiming a real allow",
		resp: &gatekeeperv1.AdmitResponse{Decision: gatekeeperv1.Decision_DECISION_DENY, RealDecision: gatekeeperv1.Decision_DECISION_ALLOW},
		want: `{"decision":"deny","ref":"app@1","environment":"prod","reasons":[],"decision_id":"","policy_digest":"","policy_revision":"","dry_run":false,"real_decision":"deny","input_attestations":[],"log_index":0,"signed":false}`,
	}, {
		// An artifact the catalog does not know: no digest, no record.
		name: "deny without a record",
		resp: &gatekeeperv1.AdmitResponse{Decision: gatekeeperv1.Decision_DECISION_DENY, Reasons: []string{"artifact app@1 is not in the catalog"}, DecisionId: "d2"},
		want: `{"decision":"deny","ref":"app@1","environment":"prod","reasons":["artifact app@1 is not in the catalog"],` +
			`"decision_id":"d2","policy_digest":"","policy_revision":"","dry_run":false,"real_decision":"deny","input_attestations":[],"log_index":0,"signed":false}`,
	}, {
		// Whatever the gatekeeper sends, a deny is never printed as allow
		// and reasons are a list.
		name: "unspecified",
		resp: &gatekeeperv1.AdmitResponse{},
		want: `{"decision":"deny","ref":"app@1","environment":"prod","reasons":[],"decision_id":"","policy_digest":"","policy_revision":"","dry_run":false,"real_decision":"deny","input_attestations":[],"log_index":0,"signed":false}`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(admitJSON("app@1", "prod", tt.resp))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("admit --json:\n got %s\nwant %s", b, tt.want)
			}
		})
	}
}
