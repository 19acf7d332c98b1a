package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"

	"github.com/custody-dev/custody/cli/internal/devstack"
)

type jobOut struct {
	ID      string `json:"id"`
	Digest  string `json:"digest"`
	Done    bool   `json:"done"`
	Targets []struct {
		Name      string `json:"name"`
		Confirmed bool   `json:"confirmed"`
	} `json:"targets"`
}

// TestPurgeDropsTheEdgeCache: an artifact fetched through the edge is in
// its cache; `custody purge` queues a job at the broker, which purges the
// real edge process over mTLS and logs every step; the edge's cache no
// longer holds the digest. A broker killed mid-queue resumes the job.
// Deployers, builders, auditors and the edge itself may not ask for
// purges.
func TestPurgeDropsTheEdgeCache(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	src := randomFile(t, work, "purged", 64<<10)
	digest := digestOf(s.mustCustody("publish", src, "--name", "purged", "--version", "1", "--channel", "staging"))
	s.mustCustody("fetch", "purged@1", "--env", "staging", "-o", filepath.Join(work, "out"))
	cached := filepath.Join(devstack.Layout{Dir: s.dir}.DataDir("edge"), "sha256-"+strings.TrimPrefix(digest, "sha256:"))
	if _, err := os.Stat(cached); err != nil {
		t.Fatalf("the edge did not cache the fetched blob: %v", err)
	}

	for _, as := range []string{"deployer", "builder", "auditor"} {
		if out, code := s.custody("purge", digest, "--as", as); code == 0 || !strings.Contains(out, "PermissionDenied") {
			t.Errorf("custody purge as %s: exit %d, want PermissionDenied:\n%s", as, code, out)
		}
	}
	// The edge's own identity may not use the broker to purge.
	l := devstack.Layout{Dir: s.dir}
	td := spiffeid.RequireTrustDomainFromString(s.info.TrustDomain)
	src2, err := identity.OpenFiles(l.SVIDDir("edge"), td, nil)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := rpc.Dial(s.info.Services["cdn-broker"]["grpc"], devstack.ServerID(td, "cdn-broker"), src2, telemetry.Discard("e2e"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	_, err = cdnbrokerv1.NewCdnBrokerServiceClient(cc).PurgeDigests(t.Context(), &cdnbrokerv1.PurgeDigestsRequest{Digests: []string{digest}, Reason: "admin", Reference: "edge-1"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("PurgeDigests as the edge = %v, want PermissionDenied", err)
	}
	if _, err := os.Stat(cached); err != nil {
		t.Fatal("a refused purge request dropped the cache")
	}

	var out struct {
		Jobs []jobOut `json:"jobs"`
	}
	mustJSON(t, s.mustCustody("purge", digest, "--reference", "ticket-42", "--wait", "60s", "--json"), &out)
	// Every dev edge is a target, in the broker's order.
	if len(out.Jobs) != 1 || out.Jobs[0].Digest != digest || !out.Jobs[0].Done || len(out.Jobs[0].Targets) != len(devstack.EdgeServices) {
		t.Fatalf("purge output %+v", out)
	}
	for i, e := range devstack.EdgeServices {
		if tg := out.Jobs[0].Targets[i]; tg.Name != "edge:"+devstack.Edges[e] || !tg.Confirmed {
			t.Fatalf("purge target %d: %+v, want edge:%s confirmed", i, tg, devstack.Edges[e])
		}
	}
	if _, err := os.Stat(cached); !os.IsNotExist(err) {
		t.Fatalf("the edge still caches %s after the purge: %v", digest, err)
	}
	status := s.mustCustody("purge", "status")
	if !strings.Contains(status, out.Jobs[0].ID) || !strings.Contains(status, "edge:dev") || !strings.Contains(status, "confirmed") {
		t.Fatalf("purge status:\n%s", status)
	}

	// Restart mid-queue: the edge frozen, a purge queued, the broker
	// killed; the restarted broker resumes the job from its state
	// directory once the edge answers again.
	s.mustCustody("fetch", "purged@1", "--env", "staging", "-o", filepath.Join(work, "out2"))
	if _, err := os.Stat(cached); err != nil {
		t.Fatalf("the edge did not cache the blob again: %v", err)
	}
	edgePID := s.info.PIDs["edge"]
	if err := syscall.Kill(edgePID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(edgePID, syscall.SIGCONT) })
	mustJSON(t, s.mustCustody("purge", digest, "--reference", "ticket-43", "--json"), &out)
	if len(out.Jobs) != 1 || out.Jobs[0].Done {
		t.Fatalf("purge with the edge frozen: %+v", out)
	}
	resumed := out.Jobs[0].ID
	if b, err := os.ReadFile(filepath.Join(l.DataDir("cdn-broker"), "purges.json")); err != nil || !strings.Contains(string(b), resumed) {
		t.Fatalf("the queued job is not in the broker's queue file: %v", err)
	}
	oldBroker := s.info.PIDs["cdn-broker"]
	if err := syscall.Kill(oldBroker, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		var now devstack.Stack
		if b, err := os.ReadFile(l.StackFile()); err == nil && json.Unmarshal(b, &now) == nil && now.PIDs["cdn-broker"] != oldBroker {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the broker was not restarted within 90s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := syscall.Kill(edgePID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for {
		o, code := s.custody("purge", "status", "--json")
		if code == 0 {
			mustJSON(t, o, &out)
			if i := slices.IndexFunc(out.Jobs, func(j jobOut) bool { return j.ID == resumed }); i >= 0 && out.Jobs[i].Done {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted broker did not finish job %s:\n%s", resumed, o)
		}
		time.Sleep(time.Second)
	}
	if _, err := os.Stat(cached); !os.IsNotExist(err) {
		t.Fatalf("the edge still caches %s after the resumed purge: %v", digest, err)
	}

	// Every step is in the log, written by the broker.
	deadline = time.Now().Add(60 * time.Second)
	for {
		audit, _ := s.custody("audit", digest)
		if strings.Contains(audit, "purge.requested") && strings.Contains(audit, "purge.confirmed") {
			if !strings.Contains(audit, "/service/cdn-broker") {
				t.Fatalf("purge events not by the broker:\n%s", audit)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("purge events not in the audit trail after 60s:\n%s", audit)
		}
		time.Sleep(time.Second)
	}
}
