package server

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/libs/tlog"
)

func (s *stack) allow(t *testing.T, name, version, env string) *gatekeeperv1.AdmitResponse {
	t.Helper()
	resp, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: name, Version: version, Environment: env})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
		t.Fatalf("admit %s@%s to %s: %v %q, want allow", name, version, env, resp.GetDecision(), resp.GetReasons())
	}
	return resp
}

func (s *stack) deploymentCount() int {
	s.catalog.mu.Lock()
	defer s.catalog.mu.Unlock()
	return len(s.catalog.deployments)
}

// TestRecordDeployment: a deployer (and an admin) reports a deployment by
// name@version or by digest under the allow it got; the gatekeeper passes
// the decision's artifact, environment, id and record hash, and the
// deployer's ID, to the catalog.
func TestRecordDeployment(t *testing.T) {
	s := newStack(t)
	r := s.publish(t, "app", "1.4.0", "staging")
	dec := s.allow(t, "app", "1.4.0", "staging")
	for _, tc := range []struct {
		who string
		req *gatekeeperv1.RecordDeploymentRequest
	}{
		{"/deployer/pipeline", &gatekeeperv1.RecordDeploymentRequest{Name: "app", Version: "1.4.0", Environment: "staging", DecisionEnvelope: dec.GetDecisionEnvelope()}},
		{"/admin/ops", &gatekeeperv1.RecordDeploymentRequest{Digest: r.artifact.GetDigest(), Environment: "staging", DecisionEnvelope: dec.GetDecisionEnvelope(), DecisionId: dec.GetDecisionId()}},
	} {
		resp, err := s.client(t, tc.who).RecordDeployment(t.Context(), tc.req)
		if err != nil {
			t.Fatalf("%s: %v", tc.who, err)
		}
		if resp.GetName() != "app" || resp.GetVersion() != "1.4.0" || resp.GetDigest() != r.artifact.GetDigest() ||
			resp.GetEnvironment() != "staging" || resp.GetDecisionId() != dec.GetDecisionId() {
			t.Errorf("%s: response %v", tc.who, resp)
		}
		got := s.catalog.deployments[len(s.catalog.deployments)-1]
		if got.GetReportedBy() != "spiffe://custody.test"+tc.who || got.GetDigest() != r.artifact.GetDigest() ||
			got.GetDecisionId() != dec.GetDecisionId() || len(got.GetDecisionEnvelopeSha256()) != 64 {
			t.Errorf("%s: catalog got %v", tc.who, got)
		}
		if e := s.catalog.lastEvent(); e.Type != tlog.TypeDeploymentRecorded || e.Actor != "spiffe://custody.test/service/gatekeeper" || int64(len(s.catalog.leaves)-1) != resp.GetLogIndex() {
			t.Errorf("%s: logged %+v at %d", tc.who, e, resp.GetLogIndex())
		}
	}
}

// TestRecordDeploymentRefuses: callers other than deployers and admins,
// decisions that are not this gatekeeper's valid allow for the artifact and
// environment, and malformed requests are refused, and nothing reaches the
// catalog.
func TestRecordDeploymentRefuses(t *testing.T) {
	s := newStack(t)
	r := s.publish(t, "app", "1.4.0", "staging")
	s.publish(t, "other", "1.0.0", "staging")
	dec := s.allow(t, "app", "1.4.0", "staging")
	good := func() *gatekeeperv1.RecordDeploymentRequest {
		return &gatekeeperv1.RecordDeploymentRequest{Name: "app", Version: "1.4.0", Environment: "staging", DecisionEnvelope: dec.GetDecisionEnvelope()}
	}
	for _, who := range []string{"/builder/ci", "/edge/dev", "/service/publisher", "/service/catalog", "/approver/alice", "/auditor/audit"} {
		if _, err := s.client(t, who).RecordDeployment(t.Context(), good()); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v, want PermissionDenied", who, err)
		}
	}

	// A deny with a signed record.
	deny, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.4.0", Environment: "prod"})
	if err != nil || deny.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || len(deny.GetDecisionEnvelope()) == 0 {
		t.Fatalf("admit to prod: %v, %v; want a signed deny", deny, err)
	}
	vsa := func(verifier string, passed bool, at time.Time) []byte {
		st, err := attest.NewVSA(attest.Decision{VerifierID: verifier, Name: "app", Version: "1.4.0", Digest: r.artifact.GetDigest(),
			Environment: "staging", PolicyURI: "custody:policy/admission", PolicyDigest: digestOf("p"), DecisionID: "00112233445566778899aabbccddeeff",
			Passed: passed, Time: at})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	gk := "spiffe://custody.test/service/gatekeeper"
	for _, tc := range []struct {
		name string
		mod  func(*gatekeeperv1.RecordDeploymentRequest)
		code codes.Code
	}{
		{"another environment", func(q *gatekeeperv1.RecordDeploymentRequest) { q.Environment = "prod" }, codes.PermissionDenied},
		{"another artifact", func(q *gatekeeperv1.RecordDeploymentRequest) { q.Name = "other"; q.Version = "1.0.0" }, codes.PermissionDenied},
		{"another digest", func(q *gatekeeperv1.RecordDeploymentRequest) { q.Name, q.Version, q.Digest = "", "", digestOf("x") }, codes.PermissionDenied},
		{"another decision id", func(q *gatekeeperv1.RecordDeploymentRequest) { q.DecisionId = "ffff" }, codes.PermissionDenied},
		{"a deny", func(q *gatekeeperv1.RecordDeploymentRequest) {
			q.Environment, q.DecisionEnvelope = "prod", deny.GetDecisionEnvelope()
		}, codes.PermissionDenied},
		{"signed by the artifact key", func(q *gatekeeperv1.RecordDeploymentRequest) {
			q.DecisionEnvelope = s.artifactKey.mustSign(t, vsa(gk, true, time.Now()))
		}, codes.PermissionDenied},
		{"by another verifier", func(q *gatekeeperv1.RecordDeploymentRequest) {
			q.DecisionEnvelope = s.signer.decision.mustSign(t, vsa("spiffe://custody.test/deployer/pipeline", true, time.Now()))
		}, codes.PermissionDenied},
		{"a forged deny-turned-allow", func(q *gatekeeperv1.RecordDeploymentRequest) {
			q.DecisionEnvelope = []byte(strings.Replace(string(deny.GetDecisionEnvelope()), "\"payload\":\"", "\"payload\":\"A", 1))
		}, codes.PermissionDenied},
		{"too old", func(q *gatekeeperv1.RecordDeploymentRequest) {
			q.DecisionEnvelope = s.signer.decision.mustSign(t, vsa(gk, true, time.Now().Add(-25*time.Hour)))
		}, codes.PermissionDenied},
		{"not an envelope", func(q *gatekeeperv1.RecordDeploymentRequest) { q.DecisionEnvelope = []byte(`{"payload":`) }, codes.PermissionDenied},
		{"no envelope", func(q *gatekeeperv1.RecordDeploymentRequest) { q.DecisionEnvelope = nil }, codes.InvalidArgument},
		{"huge envelope", func(q *gatekeeperv1.RecordDeploymentRequest) { q.DecisionEnvelope = make([]byte, 65<<10) }, codes.InvalidArgument},
		{"bad environment", func(q *gatekeeperv1.RecordDeploymentRequest) { q.Environment = "Staging\n" }, codes.InvalidArgument},
		{"both name and digest", func(q *gatekeeperv1.RecordDeploymentRequest) { q.Digest = r.artifact.GetDigest() }, codes.InvalidArgument},
		{"nothing named", func(q *gatekeeperv1.RecordDeploymentRequest) { q.Name, q.Version = "", "" }, codes.InvalidArgument},
	} {
		q := good()
		tc.mod(q)
		_, err := s.deployer.RecordDeployment(t.Context(), q)
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
	// A revoked decision key vouches for no deployment.
	s.revokeLive(s.signer.decision, time.Now())
	if _, err := s.deployer.RecordDeployment(t.Context(), good()); status.Code(err) != codes.PermissionDenied {
		t.Errorf("decision key revoked: %v, want PermissionDenied", err)
	}
	if n := s.deploymentCount(); n != 0 {
		t.Errorf("%d deployments reached the catalog, want none", n)
	}
}

// TestRecordDeploymentFailsClosed: a catalog that fails records nothing
// and the deployer is told to retry.
func TestRecordDeploymentFailsClosed(t *testing.T) {
	s := newStack(t)
	s.publish(t, "app", "1.4.0", "staging")
	dec := s.allow(t, "app", "1.4.0", "staging")
	s.catalog.mu.Lock()
	s.catalog.failNext = status.Error(codes.Unavailable, "database down")
	s.catalog.mu.Unlock()
	_, err := s.deployer.RecordDeployment(t.Context(), &gatekeeperv1.RecordDeploymentRequest{Name: "app", Version: "1.4.0", Environment: "staging", DecisionEnvelope: dec.GetDecisionEnvelope()})
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "retry") {
		t.Errorf("catalog down: %v, want Unavailable saying to retry", err)
	}
	if n := s.deploymentCount(); n != 0 {
		t.Errorf("%d deployments recorded", n)
	}
}
