package e2e

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/custody-dev/custody/cli/internal/devstack"
)

// TestKillSwitchPurgesDeployedArtifacts: the kill switch has the gatekeeper
// ask the broker (reason kill-switch) to purge every deployed artifact from
// every dev edge, and nothing that was never deployed: an artifact fetched
// after an admission alone is not purged either, since the dev stack has no
// commercial CDN (the broker adds the digests it issued commercial-CDN URLs
// for, decision 0123) and edges drop their caches by themselves.
func TestKillSwitchPurgesDeployedArtifacts(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	deployed := digestOf(s.mustCustody("publish", randomFile(t, work, "deployed", 4<<10), "--name", "deployed", "--version", "1", "--channel", "staging"))
	idle := digestOf(s.mustCustody("publish", randomFile(t, work, "idle", 4<<10), "--name", "idle", "--version", "1", "--channel", "staging"))
	s.mustCustody("fetch", "deployed@1", "--env", "staging", "-o", filepath.Join(work, "out"), "--deploy")
	s.mustCustody("fetch", "idle@1", "--env", "staging", "-o", filepath.Join(work, "idle-out"))

	on := time.Now()
	s.mustCustody("killswitch", "on", "--reason", "e2e: purge on kill switch")
	var out struct {
		Jobs []struct {
			jobOut
			Reason string `json:"reason"`
		} `json:"jobs"`
	}
	for {
		mustJSON(t, s.mustCustody("purge", "status", "--json"), &out)
		var purged []string
		done := false
		for _, j := range out.Jobs {
			if j.Reason != "kill-switch" {
				continue
			}
			purged = append(purged, j.Digest)
			if j.Digest == deployed && j.Done && len(j.Targets) == len(devstack.EdgeServices) {
				done = true
			}
		}
		if slices.Contains(purged, idle) {
			t.Fatalf("the kill switch purged %s, which was never deployed (fetched from the edges only)", idle)
		}
		if done {
			break
		}
		if time.Since(on) > 15*time.Second {
			t.Fatalf("15 s after the kill switch: jobs %+v", out.Jobs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("deployed artifact purged from every edge %v after the kill switch", time.Since(on).Round(time.Millisecond))
}
