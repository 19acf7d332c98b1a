package server

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/services/gatekeeper/internal/purge"
)

type deployments []*catalogv1.Deployment

func (d deployments) SearchArtifacts(context.Context, *catalogv1.SearchArtifactsRequest, ...grpc.CallOption) (*catalogv1.SearchArtifactsResponse, error) {
	return &catalogv1.SearchArtifactsResponse{Deployments: d}, nil
}

type purgeBroker struct {
	down  bool
	calls []*cdnbrokerv1.PurgeDigestsRequest
}

func (b *purgeBroker) PurgeDigests(_ context.Context, in *cdnbrokerv1.PurgeDigestsRequest, _ ...grpc.CallOption) (*cdnbrokerv1.PurgeDigestsResponse, error) {
	b.calls = append(b.calls, in)
	if b.down {
		return nil, status.Error(codes.Unavailable, "broker down")
	}
	return &cdnbrokerv1.PurgeDigestsResponse{}, nil
}

// TestKillSwitchPurgesDeployedArtifacts: KillSwitchOn through the
// production interceptors records a purge of every deployed digest (reason
// kill-switch, one reference per epoch), kept while the broker is down; a
// pause records none.
func TestKillSwitchPurgesDeployedArtifacts(t *testing.T) {
	d1, d2 := digestOf("a"), digestOf("b")
	b := &purgeBroker{down: true}
	q, err := purge.Open(filepath.Join(t.TempDir(), "purges.json"), deployments{{Digest: d1, Environment: "prod"}, {Digest: d2, Environment: "staging"}}, b, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s := newStackWith(t, stackOptions{purges: q})
	admin := s.client(t, "/admin/root")
	if _, err := admin.Pause(t.Context(), &gatekeeperv1.PauseRequest{Environment: "prod", Reason: "investigating"}); err != nil {
		t.Fatal(err)
	}
	if q.Pending() != 0 {
		t.Fatalf("a pause recorded %d purges, want none", q.Pending())
	}
	resp, err := admin.KillSwitchOn(t.Context(), &gatekeeperv1.KillSwitchOnRequest{Reason: "key leak"})
	if err != nil {
		t.Fatal(err)
	}
	if q.Pending() != 1 {
		t.Fatalf("%d purges pending after the kill switch, want 1", q.Pending())
	}
	if err := q.Flush(t.Context()); err == nil || q.Pending() != 1 {
		t.Fatalf("Flush with the broker down = %v, %d pending: want the purge kept", err, q.Pending())
	}
	b.down, b.calls = false, nil
	if err := q.Flush(t.Context()); err != nil || q.Pending() != 0 {
		t.Fatalf("Flush = %v, %d pending", err, q.Pending())
	}
	want := fmt.Sprintf("kill-switch-%d", resp.GetState().GetKillSwitch().GetEpoch())
	if len(b.calls) != 1 || b.calls[0].GetReason() != purge.Reason || b.calls[0].GetReference() != want || !slices.Equal(b.calls[0].GetDigests(), []string{d1, d2}) {
		t.Fatalf("purge calls %v: want %s and %s, reason %s, reference %s", b.calls, d1, d2, purge.Reason, want)
	}
}
