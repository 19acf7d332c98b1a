package server

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/gatekeeper/internal/purge"
)

// TestRevokeArtifactAuthorization: only admins and security identities
// revoke; every other identity of the trust domain (builders, deployers,
// edges, approvers, auditors, every service, look-alike paths) gets
// PermissionDenied naming the method and itself, and nothing is revoked or
// logged.
func TestRevokeArtifactAuthorization(t *testing.T) {
	s := newStack(t)
	r := s.publish(t, "app", "1.0.0", "prod")
	before := s.catalog.eventCount()
	for _, p := range []string{
		"/builder/ci", "/deployer/prod", "/deployer/pipeline", "/edge/dev", "/approver/alice", "/auditor/eve",
		"/service/cdn-broker", "/service/publisher", "/service/signer", "/service/catalog", "/service/gatekeeper",
		"/adminx/mallory", "/securityx/mallory", "/admin", "/security", "/builder/admin",
	} {
		_, err := s.client(t, p).RevokeArtifact(t.Context(), &gatekeeperv1.RevokeArtifactRequest{Digest: r.artifact.GetDigest(), Reason: "x"})
		st := status.Convert(err)
		if st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "RevokeArtifact") || !strings.Contains(st.Message(), s.td.ID(p).String()) {
			t.Errorf("RevokeArtifact as %s: %v, want PermissionDenied naming the method and the caller", p, err)
		}
	}
	if n := len(s.stops.State().Revoked); n != 0 || s.catalog.eventCount() != before {
		t.Fatalf("refused callers revoked %d artifacts, logged %d events", n, s.catalog.eventCount()-before)
	}
	if s.allow(t, "app", "1.0.0", "prod") == nil {
		t.Fatal("unreachable")
	}
	for i, p := range []string{"/admin/root", "/security/triage"} {
		r := s.publish(t, "app", fmt.Sprintf("2.%d.0", i), "prod")
		resp, err := s.client(t, p).RevokeArtifact(t.Context(), &gatekeeperv1.RevokeArtifactRequest{Digest: r.artifact.GetDigest(), Reason: "x"})
		if err != nil || resp.GetRevocation().GetRevokedBy() != s.td.ID(p).String() {
			t.Errorf("RevokeArtifact as %s: %v %v", p, resp, err)
		}
	}
}

// TestRevokeArtifactHostileInput: malformed requests are InvalidArgument
// and unknown artifacts NotFound, before anything is revoked, and the
// answer echoes at most a prefix of what was sent.
func TestRevokeArtifactHostileInput(t *testing.T) {
	s := newStack(t)
	r := s.publish(t, "app", "1.0.0", "prod")
	admin := s.client(t, "/admin/root")
	long := strings.Repeat("A", 4000)
	for _, tc := range []struct {
		name string
		req  *gatekeeperv1.RevokeArtifactRequest
		want codes.Code
	}{
		{"nothing", &gatekeeperv1.RevokeArtifactRequest{Reason: "x"}, codes.InvalidArgument},
		{"bad digest", &gatekeeperv1.RevokeArtifactRequest{Digest: "sha256:XYZ", Reason: "x"}, codes.InvalidArgument},
		{"uppercase digest", &gatekeeperv1.RevokeArtifactRequest{Digest: strings.ToUpper(r.artifact.GetDigest()), Reason: "x"}, codes.InvalidArgument},
		{"long digest", &gatekeeperv1.RevokeArtifactRequest{Digest: "sha256:" + long, Reason: "x"}, codes.InvalidArgument},
		{"digest and name", &gatekeeperv1.RevokeArtifactRequest{Digest: r.artifact.GetDigest(), Name: "app", Version: "1.0.0", Reason: "x"}, codes.InvalidArgument},
		{"name without version", &gatekeeperv1.RevokeArtifactRequest{Name: "app", Reason: "x"}, codes.InvalidArgument},
		{"long name", &gatekeeperv1.RevokeArtifactRequest{Name: long, Version: "1.0.0", Reason: "x"}, codes.InvalidArgument},
		{"control in name", &gatekeeperv1.RevokeArtifactRequest{Name: "app\x1b[2J", Version: "1.0.0", Reason: "x"}, codes.InvalidArgument},
		{"no reason", &gatekeeperv1.RevokeArtifactRequest{Digest: r.artifact.GetDigest()}, codes.InvalidArgument},
		{"blank reason", &gatekeeperv1.RevokeArtifactRequest{Digest: r.artifact.GetDigest(), Reason: " \t "}, codes.InvalidArgument},
		{"long reason", &gatekeeperv1.RevokeArtifactRequest{Digest: r.artifact.GetDigest(), Reason: strings.Repeat("r", 513)}, codes.InvalidArgument},
		{"newline in reason", &gatekeeperv1.RevokeArtifactRequest{Digest: r.artifact.GetDigest(), Reason: "a\nb"}, codes.InvalidArgument},
		{"NUL in reason", &gatekeeperv1.RevokeArtifactRequest{Digest: r.artifact.GetDigest(), Reason: "a\x00b"}, codes.InvalidArgument},
		{"C1 control in reason", &gatekeeperv1.RevokeArtifactRequest{Digest: r.artifact.GetDigest(), Reason: "a\u0085b"}, codes.InvalidArgument},
		{"bidi override in reason", &gatekeeperv1.RevokeArtifactRequest{Digest: r.artifact.GetDigest(), Reason: "ok \u202egnp.exe"}, codes.InvalidArgument},
		{"zero-width in reason", &gatekeeperv1.RevokeArtifactRequest{Digest: r.artifact.GetDigest(), Reason: "a\u200bb"}, codes.InvalidArgument},
		{"unknown name@version", &gatekeeperv1.RevokeArtifactRequest{Name: "app", Version: "9.9.9", Reason: "x"}, codes.NotFound},
		{"unknown long name", &gatekeeperv1.RevokeArtifactRequest{Name: long[:1000], Version: "1.0.0", Reason: "x"}, codes.NotFound},
		{"unknown digest", &gatekeeperv1.RevokeArtifactRequest{Digest: digestOf("never published"), Reason: "x"}, codes.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := admin.RevokeArtifact(t.Context(), tc.req)
			st := status.Convert(err)
			if st.Code() != tc.want {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
			if strings.Contains(st.Message(), long[:300]) {
				t.Errorf("the answer echoes the input whole: %d bytes", len(st.Message()))
			}
		})
	}
	if n := len(s.stops.State().Revoked); n != 0 {
		t.Fatalf("hostile input revoked %d artifacts", n)
	}
	// The catalog down: nothing is revoked, and the answer says so and
	// what to do, without the back end's details.
	s.catalog.mu.Lock()
	s.catalog.failGet = status.Error(codes.Unavailable, "postgres: connection refused at 10.0.0.7")
	s.catalog.mu.Unlock()
	_, err := admin.RevokeArtifact(t.Context(), &gatekeeperv1.RevokeArtifactRequest{Name: "app", Version: "1.0.0", Reason: "x"})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "not revoked") || strings.Contains(st.Message(), "10.0.0.7") {
		t.Fatalf("revoke with the catalog down: %v, want Unavailable saying it is not revoked", err)
	}
	s.catalog.mu.Lock()
	s.catalog.failGet = nil
	s.catalog.mu.Unlock()
	if n := len(s.stops.State().Revoked); n != 0 {
		t.Fatalf("a revoke with the catalog down revoked %d artifacts", n)
	}
	s.allow(t, "app", "1.0.0", "prod")
}

// TestRevokeArtifact: an admin revokes app@1.0.0 by name and version; it
// is logged once as artifact.revoked (subject the digest, actor the
// gatekeeper, the admin in the details); every admission of it, by name or
// digest, in every environment, is denied naming the revocation; the stop
// state lists it; revoking again is idempotent and logs nothing; other
// artifacts are untouched.
func TestRevokeArtifact(t *testing.T) {
	s := newStack(t)
	r := s.publish(t, "app", "1.0.0", "prod")
	s.publish(t, "app", "1.1.0", "prod")
	dgst := r.artifact.GetDigest()
	s.allow(t, "app", "1.0.0", "prod")
	admin := s.client(t, "/admin/root")

	resp, err := admin.RevokeArtifact(t.Context(), &gatekeeperv1.RevokeArtifactRequest{Name: "app", Version: "1.0.0", Reason: "INC-7: backdoor in 1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.GetRevocation()
	if rev.GetDigest() != dgst || rev.GetReason() != "INC-7: backdoor in 1.0.0" || rev.GetRevokedBy() != "spiffe://custody.test/admin/root" ||
		rev.GetLogIndex() < 0 || resp.GetAlreadyRevoked() || resp.GetName() != "app" || resp.GetVersion() != "1.0.0" || rev.GetEpochTime() == nil {
		t.Fatalf("revocation %v", resp)
	}
	evs := s.catalog.eventsOf(tlog.TypeArtifactRevoked)
	if len(evs) != 1 || evs[0].Subject.Digest != dgst || evs[0].Actor != s.td.ID("/service/gatekeeper").String() {
		t.Fatalf("artifact.revoked events %+v", evs)
	}
	var details map[string]any
	if err := json.Unmarshal(evs[0].Details, &details); err != nil || details["by"] != "spiffe://custody.test/admin/root" ||
		details["reason"] != "INC-7: backdoor in 1.0.0" || details["digest"] != dgst {
		t.Fatalf("details %s (%v)", evs[0].Details, err)
	}

	for _, req := range []*gatekeeperv1.AdmitRequest{
		{Name: "app", Version: "1.0.0", Environment: "prod"},
		{Name: "app", Version: "1.0.0", Environment: "staging"},
		{Digest: dgst, Environment: "dev"},
	} {
		d, err := s.deployer.Admit(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		why := strings.Join(d.GetReasons(), " ")
		if d.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !strings.Contains(why, "artifact "+dgst+" was revoked at ") ||
			!strings.Contains(why, "by spiffe://custody.test/admin/root") || !strings.Contains(why, fmt.Sprintf("artifact.revoked log index %d", rev.GetLogIndex())) ||
			!strings.Contains(why, "INC-7: backdoor in 1.0.0") {
			t.Errorf("admission %v after the revocation: %v %q", req, d.GetDecision(), d.GetReasons())
		}
		if e := s.catalog.lastEvent(); e.Type != tlog.TypeAdmissionDecided || !strings.Contains(string(e.Details), "was revoked at") {
			t.Errorf("the deny is not logged with the revocation: %s %s", e.Type, e.Details)
		}
	}
	s.allow(t, "app", "1.1.0", "prod")

	st, err := s.client(t, "/edge/dev").GetStopState(t.Context(), &gatekeeperv1.GetStopStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.GetState().GetRevoked(); len(got) != 1 || got[0].GetDigest() != dgst || got[0].GetLogIndex() != rev.GetLogIndex() {
		t.Fatalf("stop state lists %v, want the revocation", got)
	}

	n := s.catalog.eventCount()
	again, err := s.client(t, "/security/triage").RevokeArtifact(t.Context(), &gatekeeperv1.RevokeArtifactRequest{Digest: dgst, Reason: "another reason"})
	if err != nil {
		t.Fatal(err)
	}
	if !again.GetAlreadyRevoked() || again.GetRevocation().GetReason() != rev.GetReason() || again.GetRevocation().GetRevokedBy() != rev.GetRevokedBy() ||
		!again.GetRevocation().GetEpochTime().AsTime().Equal(rev.GetEpochTime().AsTime()) || s.catalog.eventCount() != n {
		t.Fatalf("revoking again: %v, %d new events; want the first revocation and none", again, s.catalog.eventCount()-n)
	}
}

// TestRevokedArtifactDeniedInDryRunAndOnRollback: a revocation is not a
// policy deny: a dry-run environment denies it too, and a granted rollback
// approval to the revoked version does not admit it (issue 10 item 4).
func TestRevokedArtifactDeniedInDryRunAndOnRollback(t *testing.T) {
	s := newStackWith(t, stackOptions{dryRun: []string{"dev"}})
	ctx := t.Context()
	for _, v := range []string{"1.0.0", "2.0.0"} {
		s.publish(t, "app", v, "prod")
	}
	s.deploy(t, "app", "2.0.0", "prod")
	const admin, bob, carol = "spiffe://custody.test/admin/ops", "spiffe://custody.test/approver/bob", "spiffe://custody.test/approver/carol"
	req, err := s.rollbacks.Request(ctx, "app", "2.0.0", "1.0.0", "prod", "2.0.0 corrupts sessions", admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{bob, carol} {
		if _, err := s.rollbacks.Approve(ctx, req.Request.ID, a); err != nil {
			t.Fatal(err)
		}
	}
	s.allow(t, "app", "1.0.0", "prod") // the rollback is granted
	s.allow(t, "app", "1.0.0", "dev")

	if _, err := s.client(t, "/security/triage").RevokeArtifact(ctx, &gatekeeperv1.RevokeArtifactRequest{Name: "app", Version: "1.0.0", Reason: "CVE-2026-1"}); err != nil {
		t.Fatal(err)
	}
	for _, env := range []string{"prod", "dev"} {
		d := s.admitTo(t, "app", "1.0.0", env)
		if d.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || d.GetRealDecision() == gatekeeperv1.Decision_DECISION_ALLOW ||
			!containsReason(d.GetReasons(), "was revoked at") {
			t.Errorf("app@1.0.0 to %s after its revocation: %v (real %v) %q, want a deny naming the revocation", env, d.GetDecision(), d.GetRealDecision(), d.GetReasons())
		}
	}
	s.allow(t, "app", "2.0.0", "prod")
}

// TestRevocationSurvivesRestartAndLogOutage: the revocation applies once
// saved, even when its event cannot be logged (Unavailable saying so, the
// denial saying the event is not logged yet); calling again logs it once;
// a gatekeeper restarted on the same stop state file still denies it and
// lists it; its purge (reason artifact-revoked, one reference per digest)
// is recorded and kept while the broker is down.
func TestRevocationSurvivesRestartAndLogOutage(t *testing.T) {
	file := filepath.Join(t.TempDir(), "stops.json")
	b := &purgeBroker{down: true}
	q, err := purge.Open(filepath.Join(t.TempDir(), "purges.json"), deployments{}, b, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s := newStackWith(t, stackOptions{stopFile: file, purges: q})
	r := s.publish(t, "app", "1.0.0", "prod")
	dgst := r.artifact.GetDigest()
	admin := s.client(t, "/admin/root")

	s.catalog.mu.Lock()
	s.catalog.failNext = status.Error(codes.Unavailable, "database down")
	s.catalog.mu.Unlock()
	_, err = admin.RevokeArtifact(t.Context(), &gatekeeperv1.RevokeArtifactRequest{Digest: dgst, Reason: "leak"})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "REVOKED") || !strings.Contains(st.Message(), "run the command again") {
		t.Fatalf("revoke with the log down: %v, want Unavailable saying it applies", err)
	}
	if len(s.catalog.eventsOf(tlog.TypeArtifactRevoked)) != 0 {
		t.Fatal("an event was logged with the log down")
	}
	if d := s.admitTo(t, "app", "1.0.0", "prod"); d.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !containsReason(d.GetReasons(), "not logged yet") {
		t.Fatalf("admission while the revocation is unlogged: %v %q", d.GetDecision(), d.GetReasons())
	}
	if q.Pending() != 1 {
		t.Fatalf("%d purges pending, want the revocation's", q.Pending())
	}
	resp, err := admin.RevokeArtifact(t.Context(), &gatekeeperv1.RevokeArtifactRequest{Digest: dgst, Reason: "leak"})
	if err != nil || !resp.GetAlreadyRevoked() || resp.GetRevocation().GetLogIndex() < 0 {
		t.Fatalf("revoking again once the log is back: %v %v", resp, err)
	}
	if n := len(s.catalog.eventsOf(tlog.TypeArtifactRevoked)); n != 1 {
		t.Fatalf("%d artifact.revoked events, want 1", n)
	}
	if _, err := admin.RevokeArtifact(t.Context(), &gatekeeperv1.RevokeArtifactRequest{Digest: dgst, Reason: "leak"}); err != nil || len(s.catalog.eventsOf(tlog.TypeArtifactRevoked)) != 1 {
		t.Fatalf("a third revoke: %v, or a second event", err)
	}
	if q.Pending() != 1 {
		t.Fatalf("%d purges pending after revoking again, want the one", q.Pending())
	}
	if err := q.Flush(t.Context()); err == nil || q.Pending() != 1 {
		t.Fatalf("Flush with the broker down = %v, %d pending: want the purge kept", err, q.Pending())
	}
	b.down, b.calls = false, nil
	if err := q.Flush(t.Context()); err != nil || q.Pending() != 0 {
		t.Fatalf("Flush = %v, %d pending", err, q.Pending())
	}
	// The broker takes references of 1 to 64 of A-Z a-z 0-9 . _ : -.
	if ref := purge.RevokedReference(dgst); len(ref) > 64 || strings.Trim(ref, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" || !strings.HasPrefix(ref, "artifact-revoked-"+dgst[7:39]) {
		t.Fatalf("reference %q does not fit the broker's rule or does not name the digest", ref)
	}
	if len(b.calls) != 1 || b.calls[0].GetReason() != purge.ReasonRevoked || b.calls[0].GetReference() != purge.RevokedReference(dgst) ||
		len(b.calls[0].GetDigests()) != 1 || b.calls[0].GetDigests()[0] != dgst {
		t.Fatalf("purge calls %v: want %s, reason artifact-revoked", b.calls, dgst)
	}

	// A new gatekeeper on the same state file: still revoked.
	s2 := newStackWith(t, stackOptions{stopFile: file})
	s2.publish(t, "app", "1.0.0", "prod") // the same bytes, so the same digest
	if d := s2.admitTo(t, "app", "1.0.0", "prod"); d.GetDecision() != gatekeeperv1.Decision_DECISION_DENY ||
		!containsReason(d.GetReasons(), fmt.Sprintf("artifact.revoked log index %d", resp.GetRevocation().GetLogIndex())) {
		t.Fatalf("after a restart: %v %q", d.GetDecision(), d.GetReasons())
	}
	st, err := s2.client(t, "/edge/dev").GetStopState(t.Context(), &gatekeeperv1.GetStopStateRequest{})
	if err != nil || len(st.GetState().GetRevoked()) != 1 || st.GetState().GetRevoked()[0].GetDigest() != dgst {
		t.Fatalf("stop state after a restart: %v %v", st, err)
	}
}
