package server

import (
	"encoding/json"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/libs/attest"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/services/gatekeeper/internal/policy"
)

// loggedDecision is the admission.decided entry the stack logged last.
func (s *stack) loggedDecision(t *testing.T) map[string]any {
	t.Helper()
	e := s.catalog.lastEvent()
	if e == nil {
		t.Fatal("nothing logged")
	}
	var d map[string]any
	if err := json.Unmarshal(e.Details, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// vsa opens the decision record of resp.
func (s *stack) vsa(t *testing.T, resp *gatekeeperv1.AdmitResponse) (*attest.Decision, map[string]any) {
	t.Helper()
	payload := s.signer.decision.open(t, resp.GetDecisionEnvelope())
	st, err := attest.ParseStatement(payload)
	if err != nil {
		t.Fatal(err)
	}
	d, err := st.Decision()
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(st.Predicate, &raw); err != nil {
		t.Fatal(err)
	}
	return d, raw
}

// TestDryRunBoundary (decision 0100): in a dry-run environment the
// policy's denials become warnings on an allow, logged with the real
// decision; a verification failure, a forged SBOM and a pause still deny;
// other environments are unaffected.
func TestDryRunBoundary(t *testing.T) {
	s := newStackWith(t, stackOptions{dryRun: []string{"prod"}})
	policyDenial := `channel "staging" may not deploy to "prod": "prod" accepts channels prod`

	t.Run("policy deny is admitted with warnings", func(t *testing.T) {
		s.publish(t, "app", "1.0.0", "staging")
		resp := s.admitAs(t, "app", "1.0.0", "prod")
		wantDecision(t, resp, allow, "warning: dry-run: "+policyDenial)
		if !resp.GetDryRun() || resp.GetRealDecision() != deny {
			t.Errorf("dry_run %v, real decision %v; want true, deny", resp.GetDryRun(), resp.GetRealDecision())
		}
		if !containsReason(resp.GetReasons(), "which is in dry-run mode: admitted") {
			t.Errorf("reasons %q: none says the environment is in dry-run mode", resp.GetReasons())
		}
		s.checkRecorded(t, resp, "allow", "prod")
		logged := s.loggedDecision(t)
		if logged["decision"] != "allow" || logged["real_decision"] != "deny" || logged["dry_run"] != true ||
			!cmp.Equal(logged["policy_denials"], []any{policyDenial}) {
			t.Errorf("logged %v: want decision allow, real_decision deny, dry_run true and the policy's denial", logged)
		}
		vsa, _ := s.vsa(t, resp)
		if !vsa.Passed || !vsa.DryRun {
			t.Errorf("decision record passed %v dry-run %v: want a PASSED dry-run record (the broker takes it as an allow)", vsa.Passed, vsa.DryRun)
		}
	})
	t.Run("an allow is an allow, marked dry-run", func(t *testing.T) {
		s.publish(t, "ok", "1.0.0", "prod")
		resp := s.admitAs(t, "ok", "1.0.0", "prod")
		wantDecision(t, resp, allow, "admits channel")
		if !resp.GetDryRun() || resp.GetRealDecision() != allow || containsReason(resp.GetReasons(), "dry-run:") {
			t.Errorf("dry_run %v real %v reasons %q: want a plain allow marked dry-run", resp.GetDryRun(), resp.GetRealDecision(), resp.GetReasons())
		}
		s.checkRecorded(t, resp, "allow", "prod")
	})
	t.Run("signature failure still denies", func(t *testing.T) {
		rogue := newSigningKey(t)
		s.signer.publish(rogue.public(signerv1.KeyPurpose_KEY_PURPOSE_ARTIFACT))
		s.publishSigned(t, newArtifact("rogue", "1.0.0", "staging"), rogue)
		resp := s.admitAs(t, "rogue", "1.0.0", "prod")
		wantDecision(t, resp, deny, "artifact envelope signature does not verify")
		// The policy's own denial is reported as a denial, not a warning.
		if !containsReason(resp.GetReasons(), policyDenial) || containsReason(resp.GetReasons(), "warning:") {
			t.Errorf("reasons %q: want the policy's denial among the denials and no warning", resp.GetReasons())
		}
		if !resp.GetDryRun() || resp.GetRealDecision() != deny {
			t.Errorf("dry_run %v real %v: want true, deny", resp.GetDryRun(), resp.GetRealDecision())
		}
		s.checkRecorded(t, resp, "deny", "prod")
		if logged := s.loggedDecision(t); logged["real_decision"] != "deny" || logged["policy_denials"] != nil {
			t.Errorf("logged %v: want real_decision deny and nothing softened", logged)
		}
	})
	t.Run("forged SBOM still denies", func(t *testing.T) {
		r := s.publish(t, "forged", "1.0.0", "staging")
		s.attachSBOM(t, r, cdx(t, map[string]string{"pkg:npm/x@1.0.0": "MIT"}), newSigningKey(t))
		wantDecision(t, s.admitAs(t, "forged", "1.0.0", "prod"), deny, "failed verification")
	})
	t.Run("non-dry-run environment unaffected", func(t *testing.T) {
		s.publish(t, "dev-only", "1.0.0", "dev")
		resp := s.admitAs(t, "dev-only", "1.0.0", "staging")
		wantDecision(t, resp, deny, `channel "dev" may not deploy to "staging"`)
		if resp.GetDryRun() || containsReason(resp.GetReasons(), "warning:") {
			t.Errorf("staging: dry_run %v reasons %q: want a plain deny", resp.GetDryRun(), resp.GetReasons())
		}
		if logged := s.loggedDecision(t); logged["dry_run"] != false || logged["real_decision"] != "deny" {
			t.Errorf("logged %v: want dry_run false", logged)
		}
	})
	t.Run("rollback rule still denies", func(t *testing.T) {
		for _, v := range []string{"1.0.0", "2.0.0"} {
			s.publish(t, "svc", v, "prod")
		}
		s.deploy(t, "svc", "2.0.0", "prod")
		resp := s.admitAs(t, "svc", "1.0.0", "prod")
		wantDecision(t, resp, deny, "svc@1.0.0 is lower than svc@2.0.0")
		if resp.GetRealDecision() != deny || containsReason(resp.GetReasons(), "warning:") {
			t.Errorf("real %v reasons %q: want a plain deny", resp.GetRealDecision(), resp.GetReasons())
		}
	})
	t.Run("pause still denies", func(t *testing.T) {
		if _, err := s.client(t, "/admin/root").Pause(t.Context(), &gatekeeperv1.PauseRequest{Environment: "prod", Reason: "incident"}); err != nil {
			t.Fatal(err)
		}
		wantDecision(t, s.admitAs(t, "ok", "1.0.0", "prod"), deny, "paused")
	})
}

// TestDecisionRecordFields: the VSA follows the VSA v1 field rules on an
// allow and on a deny (verifier.id, timeVerified, resourceUri, policy
// {uri, digest}, inputAttestations, verificationResult, verifiedLevels),
// its policy digest is the bundle's dirHash, and inputAttestations name
// the provenance and SBOM envelopes the catalog served.
func TestDecisionRecordFields(t *testing.T) {
	s := newStack(t)
	r := s.publish(t, "lib", "1.0.0", "staging")
	b := s.attachSBOM(t, r, cdx(t, map[string]string{"pkg:npm/x@1.0.0": "MIT"}), s.artifactKey)
	want := []attest.ResourceDescriptor{
		attest.InputAttestation("lib", "1.0.0", attest.AttestationProvenance, r.envelope),
		attest.InputAttestation("lib", "1.0.0", attest.AttestationSBOM, b.GetEnvelope()),
	}
	for _, tc := range []struct {
		env, result string
		levels      []any
	}{
		{"staging", "PASSED", []any{"SLSA_BUILD_LEVEL_2"}},
		{"prod", "FAILED", []any{"FAILED"}},
	} {
		t.Run(tc.env, func(t *testing.T) {
			resp := s.admitAs(t, "lib", "1.0.0", tc.env)
			s.checkRecorded(t, resp, map[string]string{"PASSED": "allow", "FAILED": "deny"}[tc.result], tc.env)
			vsa, raw := s.vsa(t, resp)
			if diff := cmp.Diff(want, vsa.InputAttestations); diff != "" {
				t.Errorf("inputAttestations (-want +got):\n%s", diff)
			}
			pol, _ := raw["policy"].(map[string]any)
			dg, _ := pol["digest"].(map[string]any)
			if pol["uri"] != "custody:policy/admission" || "dirHash:"+dg["dirHash"].(string) != s.policy.Digest() || len(dg) != 1 {
				t.Errorf("policy %v: want uri custody:policy/admission and the bundle's dirHash %s", pol, s.policy.Digest())
			}
			verifier, _ := raw["verifier"].(map[string]any)
			if verifier["id"] != "spiffe://custody.test/service/gatekeeper" || raw["timeVerified"] == "" ||
				raw["resourceUri"] != "custody:lib@1.0.0?env="+tc.env || raw["verificationResult"] != tc.result ||
				!cmp.Equal(raw["verifiedLevels"], tc.levels) {
				t.Errorf("record %v: want verifier, timeVerified, resourceUri, %s and verifiedLevels %v", raw, tc.result, tc.levels)
			}
			ext, _ := raw[attest.DecisionExtension].(map[string]any)
			if ext["policyRevision"] != "builtin" || ext["decisionId"] != resp.GetDecisionId() {
				t.Errorf("extension %v: want the bundle's revision and the decision id", ext)
			}
			for _, in := range raw["inputAttestations"].([]any) {
				m := in.(map[string]any)
				if !strings.HasPrefix(m["uri"].(string), "custody:lib@1.0.0?attestation=") || m["digest"] == nil {
					t.Errorf("input attestation %v: want a uri and a digest", m)
				}
			}
		})
	}
}

// TestSetPolicy: a policy put in force (SIGHUP reload) decides the next
// admission, and the decision names its revision and digest.
func TestSetPolicy(t *testing.T) {
	s := newStack(t)
	s.publish(t, "app", "1.0.0", "staging")
	wantDecision(t, s.admitAs(t, "app", "1.0.0", "staging"), allow, "")
	strict, err := policy.LoadBundleFS(t.Context(), "strict", fstest.MapFS{
		".manifest":      {Data: []byte(`{"revision": "strict-1"}`)},
		"admission.rego": {Data: []byte("package custody.admission\n\ndeny contains \"frozen\" if { true }\n")},
	}, policy.BundleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.gate.SetPolicy(strict)
	s.policy = strict
	resp := s.admitAs(t, "app", "1.0.0", "staging")
	wantDecision(t, resp, deny, "frozen")
	if resp.GetPolicyRevision() != "strict-1" || resp.GetPolicyDigest() != strict.Digest() {
		t.Errorf("policy %s revision %q: want the new bundle's", resp.GetPolicyDigest(), resp.GetPolicyRevision())
	}
	s.checkRecorded(t, resp, "deny", "staging")
}
