package server

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/libs/tlog"
)

func (s *stack) deploy(t *testing.T, name, version, env string) {
	t.Helper()
	dec := s.allow(t, name, version, env)
	if _, err := s.deployer.RecordDeployment(t.Context(), &gatekeeperv1.RecordDeploymentRequest{
		Name: name, Version: version, Environment: env, DecisionEnvelope: dec.GetDecisionEnvelope()}); err != nil {
		t.Fatal(err)
	}
}

func (s *stack) admitTo(t *testing.T, name, version, env string) *gatekeeperv1.AdmitResponse {
	t.Helper()
	resp, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: name, Version: version, Environment: env})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestAdmitRollback: through the gatekeeper's gRPC server, admitting a
// lower version than the highest deployed to the environment is denied,
// naming that version and the command that requests a rollback; a
// rollback granted by two approvers other than the requester lifts only
// that rule, for that name, versions and environment, until it expires.
func TestAdmitRollback(t *testing.T) {
	s := newStack(t)
	ctx := t.Context()
	for _, v := range []string{"1.1.0", "1.2.0", "1.10.0"} {
		s.publish(t, "app", v, "prod")
	}
	s.deploy(t, "app", "1.1.0", "prod")
	s.deploy(t, "app", "1.10.0", "prod")
	s.allow(t, "app", "1.10.0", "prod")   // the same version is no rollback
	s.allow(t, "app", "1.2.0", "staging") // another environment's history

	resp := s.admitTo(t, "app", "1.2.0", "prod")
	want := "app@1.2.0 is lower than app@1.10.0, the highest version deployed to prod: a rollback needs 2 approvals: custody rollback request app --from 1.10.0 --to 1.2.0 --env prod"
	if resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !containsReason(resp.GetReasons(), want) {
		t.Fatalf("rollback admitted: %v %q, want a deny %q", resp.GetDecision(), resp.GetReasons(), want)
	}
	if e := s.catalog.lastEvent(); e.Type != tlog.TypeAdmissionDecided || !strings.Contains(string(e.Details), "lower than app@1.10.0") {
		t.Errorf("the deny is not logged with its reason: %s %s", e.Type, e.Details)
	}

	const admin, bob, carol = "spiffe://custody.test/admin/ops", "spiffe://custody.test/approver/bob", "spiffe://custody.test/approver/carol"
	req, err := s.rollbacks.Request(ctx, "app", "1.10.0", "1.2.0", "prod", "1.10.0 corrupts sessions", admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.rollbacks.Approve(ctx, req.Request.ID, bob); err != nil {
		t.Fatal(err)
	}
	if resp := s.admitTo(t, "app", "1.2.0", "prod"); resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY {
		t.Fatal("one approval of two admitted the rollback")
	}
	if _, err := s.rollbacks.Approve(ctx, req.Request.ID, carol); err != nil {
		t.Fatal(err)
	}
	s.allow(t, "app", "1.2.0", "prod")
	if resp := s.admitTo(t, "app", "1.1.0", "prod"); resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY {
		t.Error("a rollback to 1.2.0 admitted 1.1.0")
	}

	// The other checks still apply: a target whose evidence does not
	// verify is denied whatever the rollback approval says.
	r := s.publish(t, "app", "1.0.0", "prod")
	req2, err := s.rollbacks.Request(ctx, "app", "1.10.0", "1.0.0", "prod", "back to 1.0.0", admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{bob, carol} {
		if _, err := s.rollbacks.Approve(ctx, req2.Request.ID, who); err != nil {
			t.Fatal(err)
		}
	}
	s.allow(t, "app", "1.0.0", "prod")
	s.tamper(r, func(g *catalogv1.GetArtifactResponse) { g.Envelope = []byte("{}") })
	if resp := s.admitTo(t, "app", "1.0.0", "prod"); resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY {
		t.Error("a granted rollback admitted a target whose evidence does not verify")
	}

	// Expiry.
	s.rollbackClock.Store(int64(time.Hour))
	if resp := s.admitTo(t, "app", "1.2.0", "prod"); resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY {
		t.Error("an expired rollback approval still admits")
	}
}

// TestAdmitRollbackFailsClosed: without the catalog's deployments no
// decision is made.
func TestAdmitRollbackFailsClosed(t *testing.T) {
	s := newStack(t)
	s.publish(t, "app", "1.0.0", "prod")
	s.catalog.mu.Lock()
	s.catalog.failSearch = status.Error(codes.Unavailable, "catalog down")
	s.catalog.mu.Unlock()
	_, err := s.deployer.Admit(t.Context(), &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("admit with the deployments unknown = %v, want Unavailable", err)
	}
}

// TestRollbackRPCs: through the gatekeeper's gRPC server with its
// production policy, an admin requests, two approvers grant, and the
// rollback is admitted; the requester and a repeated approver are
// refused; deployers, edges, builders and services can neither request
// nor approve.
func TestRollbackRPCs(t *testing.T) {
	s := newStack(t)
	ctx := t.Context()
	for _, v := range []string{"1.1.0", "1.2.0"} {
		s.publish(t, "app", v, "prod")
	}
	s.deploy(t, "app", "1.2.0", "prod")
	rreq := &gatekeeperv1.RequestRollbackRequest{Name: "app", FromVersion: "1.2.0", ToVersion: "1.1.0", Environment: "prod", Reason: "1.2.0 corrupts sessions"}

	for _, who := range []string{"/deployer/pipeline", "/edge/dev", "/builder/ci", "/service/cdn-broker", "/service/catalog", "/auditor/a"} {
		c := s.client(t, who)
		if _, err := c.RequestRollback(ctx, rreq); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s RequestRollback = %v, want PermissionDenied", who, err)
		}
		if _, err := c.ApproveRollback(ctx, &gatekeeperv1.ApproveRollbackRequest{Id: "rb-x"}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s ApproveRollback = %v, want PermissionDenied", who, err)
		}
	}
	if _, err := s.client(t, "/deployer/pipeline").ListRollbacks(ctx, &gatekeeperv1.ListRollbacksRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("deployer ListRollbacks = %v, want PermissionDenied", err)
	}

	admin := s.client(t, "/admin/ops")
	before := s.catalog.eventCount()
	resp, err := admin.RequestRollback(ctx, rreq)
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetRollback().GetId()
	if e := s.catalog.lastEvent(); e.Type != tlog.TypeRollbackRequested || e.Actor != "spiffe://custody.test/service/gatekeeper" || !strings.Contains(string(e.Details), `"by":"spiffe://custody.test/admin/ops"`) {
		t.Errorf("request logged as %s by %s: %s", e.Type, e.Actor, e.Details)
	}
	if _, err := admin.ApproveRollback(ctx, &gatekeeperv1.ApproveRollbackRequest{Id: id}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("self-approval = %v, want PermissionDenied", err)
	}
	bob := s.client(t, "/approver/bob")
	if r, err := bob.ApproveRollback(ctx, &gatekeeperv1.ApproveRollbackRequest{Id: id}); err != nil || r.GetRollback().GetGranted() {
		t.Fatalf("first approval = %v, %v", r, err)
	}
	if _, err := bob.ApproveRollback(ctx, &gatekeeperv1.ApproveRollbackRequest{Id: id}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("duplicate approval = %v, want PermissionDenied", err)
	}
	if resp := s.admitTo(t, "app", "1.1.0", "prod"); resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY {
		t.Fatal("one approval admitted the rollback")
	}
	r, err := s.client(t, "/admin/second").ApproveRollback(ctx, &gatekeeperv1.ApproveRollbackRequest{Id: id})
	if err != nil || !r.GetRollback().GetGranted() || len(r.GetRollback().GetApprovals()) != 2 {
		t.Fatalf("second approval = %v, %v; want granted", r, err)
	}
	if e := s.catalog.lastEvent(); e.Type != tlog.TypeRollbackGranted {
		t.Errorf("grant logged as %s", e.Type)
	}
	s.allow(t, "app", "1.1.0", "prod")
	// request, approved, granted, and the admissions: every step logged.
	if n := s.catalog.eventCount() - before; n < 3+2 {
		t.Errorf("%d events logged, want the 3 rollback steps and 2 decisions", n)
	}
	list, err := s.client(t, "/auditor/a").ListRollbacks(ctx, &gatekeeperv1.ListRollbacksRequest{})
	if err != nil || len(list.GetRollbacks()) != 1 || !list.GetRollbacks()[0].GetGranted() {
		t.Errorf("ListRollbacks = %v, %v", list, err)
	}
	if _, err := admin.ApproveRollback(ctx, &gatekeeperv1.ApproveRollbackRequest{Id: "rb-unknown"}); status.Code(err) != codes.NotFound {
		t.Errorf("approving an unknown request = %v, want NotFound", err)
	}
	if _, err := admin.RequestRollback(ctx, &gatekeeperv1.RequestRollbackRequest{Name: "app", FromVersion: "1.1.0", ToVersion: "1.2.0", Environment: "prod", Reason: "x"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("requesting a higher version = %v, want InvalidArgument", err)
	}
	// The log down: the request fails closed.
	s.catalog.mu.Lock()
	s.catalog.failNext = status.Error(codes.Unavailable, "down")
	s.catalog.mu.Unlock()
	if _, err := admin.RequestRollback(ctx, rreq); status.Code(err) != codes.Unavailable || strings.Contains(err.Error(), "down") {
		t.Errorf("request with the catalog down = %v, want Unavailable without the back end's words", err)
	}

	// A revoked target stays denied: the granted rollback lifts only the
	// rollback rule, not the revocation of the key that signed 1.1.0.
	s.revokeLive(s.artifactKey, time.Now().Add(-2*time.Hour))
	if err := s.gate.RefreshTrust(ctx); err != nil {
		t.Fatal(err)
	}
	resp2 := s.admitTo(t, "app", "1.1.0", "prod")
	if resp2.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !strings.Contains(strings.Join(resp2.GetReasons(), "\n"), "revoked") {
		t.Errorf("revoked rollback target: %v %q, want a deny naming the revocation", resp2.GetDecision(), resp2.GetReasons())
	}
}

// TestRollbackToVulnerableVersionDenied: a granted rollback lifts only the
// rollback rule, not the vulnerability policy (issue 10, decision 0078).
// 2.0.0 of two names is deployed to prod, which denies HIGH and above;
// app@1.0.0's SBOM lists a component a HIGH advisory affects, clean@1.0.0's
// does not. With the rollback 2.0.0 → 1.0.0 granted by the quorum for both,
// clean@1.0.0 is admitted and app@1.0.0 is still denied naming the
// advisory; once the advisory is withdrawn, app@1.0.0 is admitted on the
// same approval.
func TestRollbackToVulnerableVersionDenied(t *testing.T) {
	s := newStack(t)
	ctx := t.Context()
	const adv = "GHSA-high-0000-0001"
	s.storeAdvisories(osvDoc(t, adv, "high", "2.0.0", vecHigh))
	purls := map[string]string{"app": "pkg:npm/high@1.0.0", "clean": "pkg:npm/ok@1.0.0"}
	for name, purl := range purls {
		s.attachSBOM(t, s.publish(t, name, "1.0.0", "prod"), cdx(t, map[string]string{purl: "MIT"}), s.artifactKey)
		s.attachSBOM(t, s.publish(t, name, "2.0.0", "prod"), cdx(t, map[string]string{"pkg:npm/high@2.0.0": "MIT"}), s.artifactKey)
		s.deploy(t, name, "2.0.0", "prod")
	}
	lower := func(name string) string {
		return name + "@1.0.0 is lower than " + name + "@2.0.0, the highest version deployed to prod"
	}
	vulnerable := "component pkg:npm/high@1.0.0 is affected by " + adv + " (HIGH), denied in prod at HIGH and above"
	// Before any approval both are denied by the rollback rule.
	for name := range purls {
		wantDecision(t, s.admitAs(t, name, "1.0.0", "prod"), deny, lower(name))
	}

	const admin, bob, carol = "spiffe://custody.test/admin/ops", "spiffe://custody.test/approver/bob", "spiffe://custody.test/approver/carol"
	for name := range purls {
		req, err := s.rollbacks.Request(ctx, name, "2.0.0", "1.0.0", "prod", "2.0.0 corrupts sessions", admin)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{bob, carol} {
			if _, err := s.rollbacks.Approve(ctx, req.Request.ID, a); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The control: the granted rollback admits the clean version 1.
	wantDecision(t, s.admitAs(t, "clean", "1.0.0", "prod"), allow, "")
	// The vulnerable one is still denied, for the advisory and not for the
	// rollback rule.
	resp := s.admitAs(t, "app", "1.0.0", "prod")
	wantDecision(t, resp, deny, vulnerable)
	if containsReason(resp.GetReasons(), lower("app")) {
		t.Errorf("reasons %q name the rollback rule, which the granted approval lifts", resp.GetReasons())
	}
	if e := s.catalog.lastEvent(); e.Type != tlog.TypeAdmissionDecided || !strings.Contains(string(e.Details), adv) {
		t.Errorf("the deny is not logged with the advisory: %s %s", e.Type, e.Details)
	}

	// The same artifact and approval without the advisory: admitted.
	s.catalog.mu.Lock()
	delete(s.catalog.advisories, adv)
	s.catalog.mu.Unlock()
	wantDecision(t, s.admitAs(t, "app", "1.0.0", "prod"), allow, "")
}
