package stopstate

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
)

var t0 = time.Date(2026, 12, 2, 12, 0, 0, 500_000_000, time.UTC)

const (
	dA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// TestFindingsFromProto: the latest finding of a target wins, one without
// a time refuses everything so far, and the overflow time is kept.
func TestFindingsFromProto(t *testing.T) {
	st := FromProto(&gatekeeperv1.StopState{
		Findings: []*gatekeeperv1.FindingEpoch{
			{Digest: dA, Environment: "prod", EpochTime: timestamppb.New(t0.Add(time.Minute)), AdvisoryId: "GHSA-2"},
			{Digest: dA, Environment: "prod", EpochTime: timestamppb.New(t0), AdvisoryId: "GHSA-1"},
			{Digest: dB, Environment: "prod", AdvisoryId: "GHSA-3"},
		},
		FindingsOverflowTime: timestamppb.New(t0.Add(-time.Hour)),
	})
	if f := st.Findings[Target{dA, "prod"}]; f.Advisory != "GHSA-2" || !f.Since.Equal(t0.Add(time.Minute)) {
		t.Errorf("finding of %s: %+v, want the latest (GHSA-2)", dA, f)
	}
	if err := st.Check("prod", dA, t0.Add(30*time.Second), 0); !errors.Is(err, ErrBeforeEpoch) {
		t.Errorf("decision between two findings: %v, want ErrBeforeEpoch", err)
	}
	if err := st.Check("prod", dB, t0.Add(24*time.Hour), 0); !errors.Is(err, ErrBeforeEpoch) {
		t.Errorf("finding without a time: %v, want ErrBeforeEpoch", err)
	}
	if err := st.Check("prod", "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc", t0.Add(-2*time.Hour), 0); !errors.Is(err, ErrBeforeEpoch) {
		t.Errorf("before the overflow: %v, want ErrBeforeEpoch", err)
	}
}

func TestCheck(t *testing.T) {
	paused := State{Pauses: map[string]Stop{"prod": {Active: true, Epoch: 1, Since: t0, Reason: "incident"}}}
	resumed := State{Pauses: map[string]Stop{"prod": {Epoch: 1, Since: t0}}}
	killed := State{KillSwitch: Stop{Active: true, Epoch: 1, Since: t0}}
	lifted := State{KillSwitch: Stop{Epoch: 1, Since: t0}}
	revoked := State{Revocation: t0}
	found := State{Findings: map[Target]Finding{{dA, "prod"}: {Since: t0, Advisory: "GHSA-jf85-cpcp-j695"}}}
	overflowed := State{FindingsOverflow: t0}
	tests := []struct {
		name      string
		st        State
		env       string
		digest    string
		issued    time.Time
		precision time.Duration
		want      error
	}{
		{"nothing", State{}, "prod", "", t0, 0, nil},
		{"kill switch on", killed, "staging", "", t0.Add(time.Hour), 0, ErrStopped},
		{"kill switch lifted, before", lifted, "staging", "", t0.Add(-time.Millisecond), 0, ErrBeforeEpoch},
		{"kill switch lifted, after", lifted, "staging", "", t0.Add(time.Millisecond), 0, nil},
		{"paused env", paused, "prod", "", t0.Add(time.Hour), 0, ErrStopped},
		{"other env unaffected", paused, "staging", "", t0.Add(-time.Hour), 0, nil},
		{"unknown env counts every pause", paused, "", "", t0.Add(time.Hour), 0, ErrStopped},
		{"resumed, before pause", resumed, "prod", "", t0.Add(-time.Second), 0, ErrBeforeEpoch},
		{"resumed, after", resumed, "prod", "", t0.Add(time.Second), 0, nil},
		{"revocation, before", revoked, "prod", "", t0.Add(-time.Nanosecond), 0, ErrBeforeEpoch},
		{"revocation, equal", revoked, "prod", "", t0, 0, ErrBeforeEpoch},
		// A token issued in the same second as the epoch may predate it.
		{"second precision, same second", revoked, "prod", "", t0.Truncate(time.Second), time.Second, ErrBeforeEpoch},
		{"second precision, next second", revoked, "prod", "", t0.Truncate(time.Second).Add(time.Second), time.Second, nil},
		{"finding, decision before", found, "prod", dA, t0.Add(-time.Millisecond), 0, ErrBeforeEpoch},
		{"finding, decision at", found, "prod", dA, t0, 0, ErrBeforeEpoch},
		{"finding, decision after", found, "prod", dA, t0.Add(time.Millisecond), 0, nil},
		{"finding, same second of a token", found, "prod", dA, t0.Truncate(time.Second), time.Second, ErrBeforeEpoch},
		{"finding, other digest", found, "prod", dB, t0.Add(-time.Hour), 0, nil},
		{"finding, other environment", found, "staging", dA, t0.Add(-time.Hour), 0, nil},
		{"finding, unknown environment counts every one", found, "", dA, t0.Add(-time.Hour), 0, ErrBeforeEpoch},
		{"finding, unknown digest counts every one", found, "prod", "", t0.Add(-time.Hour), 0, ErrBeforeEpoch},
		{"findings overflow, any digest before", overflowed, "prod", dB, t0.Add(-time.Millisecond), 0, ErrBeforeEpoch},
		{"findings overflow, after", overflowed, "prod", dB, t0.Add(time.Millisecond), 0, nil},
	}
	for _, tt := range tests {
		if err := tt.st.Check(tt.env, tt.digest, tt.issued, tt.precision); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
}

type fetcher struct {
	down atomic.Bool
	kill atomic.Bool
}

func (f *fetcher) GetStopState(context.Context, *gatekeeperv1.GetStopStateRequest, ...grpc.CallOption) (*gatekeeperv1.GetStopStateResponse, error) {
	if f.down.Load() {
		return nil, status.Error(codes.Unavailable, "down")
	}
	return &gatekeeperv1.GetStopStateResponse{State: &gatekeeperv1.StopState{
		KillSwitch: &gatekeeperv1.Stop{Active: f.kill.Load(), Epoch: 1, EpochTime: timestamppb.New(t0)},
	}}, nil
}

func TestWatcherFailsClosed(t *testing.T) {
	now := t0.Add(time.Hour)
	f := &fetcher{}
	var drops, epoch atomic.Int64
	w := NewWatcher(WatcherConfig{Gatekeeper: f, MaxAge: 3 * time.Second, Now: func() time.Time { return now },
		OnKillSwitch: func(k Stop) { drops.Add(1); epoch.Store(k.Epoch) }})
	if err := w.Check("prod", dA, now, 0); !errors.Is(err, ErrUnknown) {
		t.Fatalf("before the first poll: %v, want ErrUnknown", err)
	}
	if err := w.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := w.Check("prod", dA, now, 0); err != nil {
		t.Fatalf("after a poll: %v", err)
	}
	f.down.Store(true)
	now = now.Add(2 * time.Second)
	if err := w.Poll(t.Context()); err == nil {
		t.Fatal("poll of a down gatekeeper succeeded")
	}
	if err := w.Check("prod", dA, now, 0); err != nil {
		t.Fatalf("answer 2s old: %v", err)
	}
	now = now.Add(2 * time.Second)
	if err := w.Check("prod", dA, now, 0); !errors.Is(err, ErrUnknown) {
		t.Fatalf("answer 4s old: %v, want ErrUnknown", err)
	}
	f.down.Store(false)
	f.kill.Store(true)
	_ = w.Poll(t.Context())
	_ = w.Poll(t.Context())
	if err := w.Check("prod", dA, now, 0); !errors.Is(err, ErrStopped) {
		t.Fatalf("kill switch: %v, want ErrStopped", err)
	}
	if drops.Load() != 1 || epoch.Load() != 1 {
		t.Fatalf("OnKillSwitch called %d times with epoch %d, want once with epoch 1", drops.Load(), epoch.Load())
	}
}

// The stop-state alert (deploy/alerts/stops.rules.yml) groups and names the
// service by the gauge's service label.
func TestAgeGaugeNamesTheService(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewWatcher(WatcherConfig{Gatekeeper: &fetcher{}, Registry: reg, Service: "edge"})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "custody_stop_state_age_seconds" {
			continue
		}
		for _, l := range mf.GetMetric()[0].GetLabel() {
			if l.GetName() == "service" && l.GetValue() == "edge" {
				return
			}
		}
		t.Fatalf("custody_stop_state_age_seconds labels %v, want service=edge", mf.GetMetric()[0].GetLabel())
	}
	t.Fatal("custody_stop_state_age_seconds not registered")
}

// TestRevokedArtifacts: a revoked digest is refused whenever its decision
// or token was issued, after the revocation too, and in every
// environment; other digests are not; anything issued at or before the
// overflow time is refused whatever its digest; a caller that names no
// digest is refused for what was issued before a revocation.
func TestRevokedArtifacts(t *testing.T) {
	st := FromProto(&gatekeeperv1.StopState{
		Revoked: []*gatekeeperv1.RevokedArtifact{
			{Digest: dA, EpochTime: timestamppb.New(t0), Reason: "INC-7 backdoor", RevokedBy: "spiffe://custody.test/admin/ops", LogIndex: 42},
		},
		RevokedOverflowTime: timestamppb.New(t0.Add(-time.Hour)),
	})
	for _, tc := range []struct {
		name   string
		env    string
		dgst   string
		issued time.Time
		prec   time.Duration
		want   error
	}{
		{"revoked, before", "prod", dA, t0.Add(-time.Minute), 0, ErrRevoked},
		{"revoked, after", "prod", dA, t0.Add(time.Hour), 0, ErrRevoked},
		{"revoked, token second", "staging", dA, t0.Add(time.Second), time.Second, ErrRevoked},
		{"revoked, no env", "", dA, t0.Add(time.Hour), 0, ErrRevoked},
		{"other digest after the overflow", "prod", dB, t0.Add(-time.Minute), 0, nil},
		{"other digest at the overflow", "prod", dB, t0.Add(-time.Hour), 0, ErrBeforeEpoch},
		{"other digest token in the overflow's second", "prod", dB, t0.Add(-time.Hour).Truncate(time.Second), time.Second, ErrBeforeEpoch},
		{"no digest, before the revocation", "prod", "", t0.Add(-time.Minute), 0, ErrRevoked},
		{"no digest, after", "prod", "", t0.Add(time.Minute), 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := st.Check(tc.env, tc.dgst, tc.issued, tc.prec)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
			if errors.Is(err, ErrRevoked) {
				for _, w := range []string{dA, "INC-7 backdoor", "spiffe://custody.test/admin/ops", "artifact.revoked log index 42"} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%q does not name %q", err, w)
					}
				}
			}
		})
	}
}
