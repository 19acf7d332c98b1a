package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
	"github.com/custody-dev/custody/services/gatekeeper/internal/stop"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
)

// TestStopAuthorization: builders, deployers, edges and other services can
// neither pull nor lift a stop; only the broker, edges, admins, approvers
// and auditors read it.
func TestStopAuthorization(t *testing.T) {
	s := newStack(t)
	ctx := t.Context()
	type call func(c gatekeeperv1.GatekeeperServiceClient) error
	calls := map[string]call{
		"Pause": func(c gatekeeperv1.GatekeeperServiceClient) error {
			_, err := c.Pause(ctx, &gatekeeperv1.PauseRequest{Environment: "prod", Reason: "x"})
			return err
		},
		"KillSwitchOn": func(c gatekeeperv1.GatekeeperServiceClient) error {
			_, err := c.KillSwitchOn(ctx, &gatekeeperv1.KillSwitchOnRequest{Reason: "x"})
			return err
		},
		"Resume": func(c gatekeeperv1.GatekeeperServiceClient) error {
			_, err := c.Resume(ctx, &gatekeeperv1.ResumeRequest{Environment: "prod"})
			return err
		},
		"KillSwitchOff": func(c gatekeeperv1.GatekeeperServiceClient) error {
			_, err := c.KillSwitchOff(ctx, &gatekeeperv1.KillSwitchOffRequest{})
			return err
		},
		"GetStopState": func(c gatekeeperv1.GatekeeperServiceClient) error {
			_, err := c.GetStopState(ctx, &gatekeeperv1.GetStopStateRequest{})
			return err
		},
	}
	denied := map[string][]string{
		"Pause":         {"/builder/ci", "/deployer/prod", "/edge/dev", "/service/cdn-broker", "/approver/alice", "/auditor/eve", "/adminx/mallory"},
		"KillSwitchOn":  {"/builder/ci", "/deployer/prod", "/edge/dev", "/service/cdn-broker", "/approver/alice", "/auditor/eve"},
		"Resume":        {"/builder/ci", "/deployer/prod", "/edge/dev", "/service/cdn-broker", "/auditor/eve"},
		"KillSwitchOff": {"/builder/ci", "/deployer/prod", "/edge/dev", "/service/cdn-broker", "/auditor/eve"},
		"GetStopState":  {"/builder/ci", "/deployer/prod", "/service/publisher"},
	}
	for method, paths := range denied {
		for _, p := range paths {
			if err := calls[method](s.client(t, p)); status.Code(err) != codes.PermissionDenied {
				t.Errorf("%s as %s: %v, want PermissionDenied", method, p, err)
			}
		}
	}
	for _, p := range []string{"/service/cdn-broker", "/edge/dev", "/auditor/eve", "/approver/alice"} {
		if err := calls["GetStopState"](s.client(t, p)); err != nil {
			t.Errorf("GetStopState as %s: %v", p, err)
		}
	}
	if st := s.stops.State(); st.KillSwitch.Active || len(st.Pauses) != 0 {
		t.Fatalf("a refused caller changed the state: %+v", st)
	}
}

func TestStopInvalidArgument(t *testing.T) {
	s := newStack(t)
	admin := s.client(t, "/admin/root")
	ctx := t.Context()
	for _, req := range []*gatekeeperv1.PauseRequest{
		{Environment: "prod", Reason: ""},
		{Environment: "prod", Reason: "   "},
		{Environment: "Prod", Reason: "x"},
		{Environment: "kill-switch", Reason: "x"},
		{Environment: "../etc", Reason: "x"},
		{Environment: stop.KillSwitch, Reason: "x"},
		{Environment: "prod", Reason: strings.Repeat("a", 513)},
		{Environment: "prod", Reason: "line\nbreak"},
	} {
		_, err := admin.Pause(ctx, req)
		if req.Environment == "kill-switch" {
			// "kill-switch" is a valid environment name; pausing it must
			// not turn the kill switch on.
			if err != nil {
				t.Fatalf("pause of an environment named kill-switch: %v", err)
			}
			if st, _ := admin.GetStopState(ctx, &gatekeeperv1.GetStopStateRequest{}); st.GetState().GetKillSwitch().GetActive() {
				t.Fatal("pausing an environment named kill-switch turned the kill switch on")
			}
			continue
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Pause(%q, %q): %v, want InvalidArgument", req.Environment, req.Reason, err)
		}
	}
	if _, err := admin.Resume(ctx, &gatekeeperv1.ResumeRequest{Environment: "staging"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Resume of an environment not paused: %v, want FailedPrecondition", err)
	}
}

// TestPauseQuorumAndAdmissions: one admin pauses; the same admin twice
// counts once; a second distinct approver lifts; decisions are denied while
// paused, only in that environment; every step is logged.
func TestPauseQuorumAndAdmissions(t *testing.T) {
	s := newStack(t)
	s.publish(t, "app", "1.0.0", "prod")
	ctx := t.Context()
	admin, alice := s.client(t, "/admin/root"), s.client(t, "/approver/alice")

	before := s.catalog.eventCount()
	pr, err := admin.Pause(ctx, &gatekeeperv1.PauseRequest{Environment: "prod", Reason: "incident 42"})
	if err != nil {
		t.Fatal(err)
	}
	p := pr.GetState().GetPauses()
	if len(p) != 1 || !p[0].GetStop().GetActive() || p[0].GetStop().GetEpoch() != 1 || p[0].GetStop().GetLiftQuorum() != 2 {
		t.Fatalf("state after pause: %v", pr.GetState())
	}
	if e := s.catalog.lastEvent(); e.Type != "pause.on" || e.Actor != s.td.ID("/service/gatekeeper").String() || !strings.Contains(string(e.Details), "incident 42") {
		t.Fatalf("pause event: %+v", e)
	}
	resp, err := s.deployer.Admit(ctx, &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !strings.Contains(strings.Join(resp.GetReasons(), " "), "environment prod is paused") {
		t.Fatalf("admission while paused: %v %v", resp.GetDecision(), resp.GetReasons())
	}
	if resp, err := s.deployer.Admit(ctx, &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "staging"}); err != nil || resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
		t.Fatalf("staging admission while prod is paused: %v %v %v", resp.GetDecision(), resp.GetReasons(), err)
	}

	for i := range 2 {
		r, err := admin.Resume(ctx, &gatekeeperv1.ResumeRequest{Environment: "prod"})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetLifted() || r.GetApprovals() != 1 || r.GetQuorum() != 2 {
			t.Fatalf("admin's approval %d: lifted=%v %d/%d, want 1/2 and still paused", i+1, r.GetLifted(), r.GetApprovals(), r.GetQuorum())
		}
	}
	r, err := alice.Resume(ctx, &gatekeeperv1.ResumeRequest{Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if !r.GetLifted() || r.GetApprovals() != 2 {
		t.Fatalf("second distinct approval: %v", r)
	}
	if e := s.catalog.lastEvent(); e.Type != "pause.off" {
		t.Fatalf("last event %s, want pause.off", e.Type)
	}
	// on, approved, approved (same admin, logged), off, and the two decisions.
	if n := s.catalog.eventCount() - before; n != 6 {
		t.Errorf("%d events logged, want 6", n)
	}
	resp, err = s.deployer.Admit(ctx, &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"})
	if err != nil || resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
		t.Fatalf("admission after resume: %v %v %v", resp.GetDecision(), resp.GetReasons(), err)
	}
	st, err := admin.GetStopState(ctx, &gatekeeperv1.GetStopStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ps := st.GetState().GetPauses()[0].GetStop(); ps.GetActive() || ps.GetEpoch() != 1 || ps.GetEpochTime() == nil || ps.GetLiftedAt() == nil {
		t.Fatalf("state after resume: %v", ps)
	}
}

// TestStopStepsAreMetrics: on the gatekeeper's registry, as served on
// /metrics, each pause and kill-switch step counts once in
// custody_stop_changes_total{kind, environment, action} (action on, then
// approved for an approval short of the quorum, then off for the one that
// lifts) and custody_stop_active{kind, environment} is 1 exactly while the
// stop applies; the kill switch's environment is empty. An approval that
// could not be logged does not count.
func TestStopStepsAreMetrics(t *testing.T) {
	s := newStack(t)
	ctx := t.Context()
	admin, alice, bob := s.client(t, "/admin/root"), s.client(t, "/approver/alice"), s.client(t, "/approver/bob")
	want := map[stopSeries]float64{}
	check := func(when string, pauseActive, killActive float64) {
		t.Helper()
		changes, active := stopMetrics(t, s)
		if !maps.Equal(changes, want) {
			t.Errorf("%s: custody_stop_changes_total %v, want %v", when, changes, want)
		}
		wantActive := map[stopSeries]float64{{"killswitch", "", ""}: killActive}
		if pauseActive >= 0 {
			wantActive[stopSeries{"pause", "prod", ""}] = pauseActive
		}
		if !maps.Equal(active, wantActive) {
			t.Errorf("%s: custody_stop_active %v, want %v", when, active, wantActive)
		}
	}
	check("at start", -1, 0)

	if _, err := admin.Pause(ctx, &gatekeeperv1.PauseRequest{Environment: "prod", Reason: "incident 42"}); err != nil {
		t.Fatal(err)
	}
	want[stopSeries{"pause", "prod", "on"}] = 1
	check("paused", 1, 0)
	if r, err := admin.Resume(ctx, &gatekeeperv1.ResumeRequest{Environment: "prod"}); err != nil || r.GetLifted() {
		t.Fatalf("first approval: %v %v", r, err)
	}
	want[stopSeries{"pause", "prod", "approved"}] = 1
	check("one approval of two", 1, 0)
	s.catalog.mu.Lock()
	s.catalog.failNext = status.Error(codes.Unavailable, "catalog down")
	s.catalog.mu.Unlock()
	if _, err := alice.Resume(ctx, &gatekeeperv1.ResumeRequest{Environment: "prod"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("approval with the log down: %v, want Unavailable", err)
	}
	check("an unlogged approval", 1, 0)
	if r, err := alice.Resume(ctx, &gatekeeperv1.ResumeRequest{Environment: "prod"}); err != nil || !r.GetLifted() {
		t.Fatalf("second approval: %v %v", r, err)
	}
	want[stopSeries{"pause", "prod", "off"}] = 1
	check("resumed", 0, 0)

	if _, err := admin.KillSwitchOn(ctx, &gatekeeperv1.KillSwitchOnRequest{Reason: "key leak"}); err != nil {
		t.Fatal(err)
	}
	want[stopSeries{"killswitch", "", "on"}] = 1
	check("kill switch on", 0, 1)
	if r, err := alice.KillSwitchOff(ctx, &gatekeeperv1.KillSwitchOffRequest{}); err != nil || r.GetLifted() {
		t.Fatalf("first kill-switch approval: %v %v", r, err)
	}
	want[stopSeries{"killswitch", "", "approved"}] = 1
	check("one kill-switch approval of two", 0, 1)
	if r, err := bob.KillSwitchOff(ctx, &gatekeeperv1.KillSwitchOffRequest{}); err != nil || !r.GetLifted() {
		t.Fatalf("second kill-switch approval: %v %v", r, err)
	}
	want[stopSeries{"killswitch", "", "off"}] = 1
	check("kill switch off", 0, 0)
}

// stopSeries is one series of the stop metrics; action is empty for
// custody_stop_active.
type stopSeries struct{ kind, env, action string }

// stopMetrics gathers custody_stop_changes_total by kind, environment and
// action, and custody_stop_active by kind and environment (action empty),
// from the stack's registry.
func stopMetrics(t *testing.T, s *stack) (changes, active map[stopSeries]float64) {
	t.Helper()
	mfs, err := s.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	changes, active = map[stopSeries]float64{}, map[stopSeries]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			k := stopSeries{l["kind"], l["environment"], l["action"]}
			switch mf.GetName() {
			case "custody_stop_changes_total":
				changes[k] = m.GetCounter().GetValue()
			case "custody_stop_active":
				active[k] = m.GetGauge().GetValue()
			}
		}
	}
	return changes, active
}

// TestKillSwitchPersistsAcrossRestart: the kill switch denies every
// admission, survives a gatekeeper restart on the same state file, and the
// approvals gathered before the restart still count.
func TestKillSwitchPersistsAcrossRestart(t *testing.T) {
	s := newStack(t)
	ctx := t.Context()
	if _, err := s.client(t, "/admin/root").KillSwitchOn(ctx, &gatekeeperv1.KillSwitchOnRequest{Reason: "key leak"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client(t, "/approver/alice").KillSwitchOff(ctx, &gatekeeperv1.KillSwitchOffRequest{}); err != nil {
		t.Fatal(err)
	}

	s2 := newStackWith(t, stackOptions{stopFile: s.stopFile})
	s2.publish(t, "app", "1.0.0", "prod")
	resp, err := s2.deployer.Admit(ctx, &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "staging"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !strings.Contains(strings.Join(resp.GetReasons(), " "), "kill switch is on") {
		t.Fatalf("admission after restart with the kill switch on: %v %v", resp.GetDecision(), resp.GetReasons())
	}
	// alice again counts once; bob is the second.
	if r, err := s2.client(t, "/approver/alice").KillSwitchOff(ctx, &gatekeeperv1.KillSwitchOffRequest{}); err != nil || r.GetLifted() || r.GetApprovals() != 1 {
		t.Fatalf("alice again after restart: %v %v", r, err)
	}
	r, err := s2.client(t, "/approver/bob").KillSwitchOff(ctx, &gatekeeperv1.KillSwitchOffRequest{})
	if err != nil || !r.GetLifted() {
		t.Fatalf("bob: %v %v", r, err)
	}
	if ks := r.GetState().GetKillSwitch(); ks.GetEpoch() != 1 || ks.GetReason() != "key leak" {
		t.Fatalf("kill switch after lift: %v", ks)
	}
}

// TestStopLiftFailsClosedWhenTheLogIsDown: an approval that cannot be
// logged does not count; turning a stop on still applies it.
func TestStopLiftFailsClosedWhenTheLogIsDown(t *testing.T) {
	s := newStack(t)
	ctx := t.Context()
	admin := s.client(t, "/admin/root")
	s.catalog.mu.Lock()
	s.catalog.failNext = status.Error(codes.Unavailable, "catalog down")
	s.catalog.mu.Unlock()
	_, err := admin.KillSwitchOn(ctx, &gatekeeperv1.KillSwitchOnRequest{Reason: "x"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "is ON") {
		t.Fatalf("kill switch with the log down: %v, want Unavailable saying it is on", err)
	}
	if !s.stops.State().KillSwitch.Active {
		t.Fatal("the kill switch did not apply while the log was down")
	}
	s.catalog.mu.Lock()
	s.catalog.failNext = status.Error(codes.Unavailable, "catalog down")
	s.catalog.mu.Unlock()
	if _, err := admin.KillSwitchOff(ctx, &gatekeeperv1.KillSwitchOffRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("approval with the log down: %v, want Unavailable", err)
	}
	if a := s.stops.State().KillSwitch.Approvals; len(a) != 0 {
		t.Fatalf("an unlogged approval counted: %v", a)
	}
}

// TestGetStopStateFailsClosedWithoutRevocations: with the signer down the
// revocation epoch is unknown, so the readers get Unavailable.
func TestGetStopStateFailsClosedWithoutRevocations(t *testing.T) {
	s := newStack(t)
	ctx := t.Context()
	broker := s.client(t, "/service/cdn-broker")
	st, err := broker.GetStopState(ctx, &gatekeeperv1.GetStopStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetState().GetRevocationsCheckedAt() == nil {
		t.Fatal("no revocations_checked_at")
	}
	s.stopSigner()
	s.clock.Store(int64(RevocationMaxAge + time.Second))
	s.gate.RefreshTrust(ctx) //nolint:errcheck // fails: the signer is down
	if _, err := broker.GetStopState(ctx, &gatekeeperv1.GetStopStateRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("GetStopState with stale revocations: %v, want Unavailable", err)
	}
}

func TestCorruptStopStateRefusesToStart(t *testing.T) {
	s := newStack(t)
	if _, err := s.client(t, "/admin/root").Pause(t.Context(), &gatekeeperv1.PauseRequest{Environment: "prod", Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	b := mustRead(t, s.stopFile)
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("state file is not JSON: %v", err)
	}
	mustWrite(t, s.stopFile, b[:len(b)/2])
	if _, err := openStops(t, s.stopFile); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("open of a truncated state file: %v, want a corrupt-state error", err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func openStops(t *testing.T, path string) (*stop.Store, error) {
	return stop.Open(stop.Config{File: path, DefaultQuorum: 1, KillSwitchQuorum: 1, Log: nopLog{},
		Logger: slog.New(slog.DiscardHandler), Registry: telemetry.Discard("t").Registry})
}

type nopLog struct{}

func (nopLog) AppendEvent(context.Context, admission.Event) (int64, error) { return 0, nil }

// TestRevocationEpochIsWhenLearned: a revocation backdated with
// --effective moves the revocation epoch to when the gatekeeper learned
// it, so that decisions made before that moment are refused downstream.
func TestRevocationEpochIsWhenLearned(t *testing.T) {
	s := newStack(t)
	ctx := t.Context()
	k := newSigningKey(t).public(signerv1.KeyPurpose_KEY_PURPOSE_ARTIFACT)
	k.Status = signerv1.KeyStatus_KEY_STATUS_REVOKED
	k.RevokedAt = timestamppb.New(time.Now().Add(-time.Hour))
	before := time.Now()
	s.signer.publish(k)
	if err := s.gate.RefreshTrust(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := s.client(t, "/service/cdn-broker").GetStopState(ctx, &gatekeeperv1.GetStopStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if rt := st.GetState().GetRevocationTime().AsTime(); rt.Before(before) {
		t.Fatalf("revocation epoch %s: want the time it was learned (after %s), not the backdated effective time", rt, before)
	}
}
