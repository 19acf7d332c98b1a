package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/tlog"
)

// publishApproved publishes to prod and has alice and bob approve it.
func publishApproved(t *testing.T, s *stack, src, name, version string) {
	t.Helper()
	publish := exec.Command(filepath.Join(s.bin, "custody"), "publish", src, "--name", name, "--version", version, "--channel", "prod")
	publish.Env = append(os.Environ(), "CUSTODY_DEV_DIR="+s.dir)
	var out strings.Builder
	publish.Stdout, publish.Stderr = &out, &out
	if err := publish.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- publish.Wait() }()
	t.Cleanup(func() { _ = publish.Process.Kill() })
	id := waitForRequest(t, s, version)
	s.mustCustody("approve", id, "--as", "alice")
	s.mustCustody("approve", id, "--as", "bob")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("publish %s@%s: %v\n%s", name, version, err, out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("publish %s@%s still waiting after the quorum:\n%s", name, version, out.String())
	}
}

type retentionReport struct {
	Deleted []struct{ Name, Version, Digest, Reason string } `json:"deleted"`
	Kept    []struct{ Name, Version, Digest, Reason string } `json:"kept"`
	DryRun  bool                                             `json:"dryRun"`
}

func versions(items []struct{ Name, Version, Digest, Reason string }) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.Name+"@"+it.Version)
	}
	slices.Sort(out)
	return out
}

// TestRetention runs the dev stack with a retention policy that names
// staging and, as an operator's mistake, prod: the real catalog's answers
// keep the approved prod artifacts; only admins may run it; what it
// deletes can no longer be fetched and is logged by the publisher.
func TestRetention(t *testing.T) {
	s := startPrepared(t, func(dir string) {
		policy := `{"channels": {"staging": {"keep_last": 1}, "prod": {"keep_last": 1}}}`
		if err := os.WriteFile(filepath.Join(dir, "retention.json"), []byte(policy), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	work := t.TempDir()
	digests := map[string]string{}
	for _, v := range []string{"1.0.0", "1.0.1", "1.0.2"} {
		out := s.mustCustody("publish", randomFile(t, work, "app-"+v, 4<<10), "--name", "app", "--version", v, "--channel", "staging")
		digests[v] = digestOf(out)
		time.Sleep(1100 * time.Millisecond) // distinct creation times
	}
	publishApproved(t, s, randomFile(t, work, "svc-1", 4<<10), "svc", "1.0.0")
	publishApproved(t, s, randomFile(t, work, "svc-2", 4<<10), "svc", "1.0.1")

	for _, as := range []string{"builder", "alice"} {
		if out, code := s.custody("store", "retention", "run", "--as", as); code == 0 || !strings.Contains(out, "PermissionDenied") {
			t.Errorf("retention run as %s: exit %d, want PermissionDenied:\n%s", as, code, out)
		}
	}
	var dry retentionReport
	if err := json.Unmarshal([]byte(s.mustCustody("store", "retention", "run", "--dry-run", "--json")), &dry); err != nil {
		t.Fatal(err)
	}
	if got := versions(dry.Deleted); !dry.DryRun || !slices.Equal(got, []string{"app@1.0.0", "app@1.0.1"}) {
		t.Fatalf("dry run would delete %v", got)
	}
	if got := versions(dry.Kept); !slices.Equal(got, []string{"svc@1.0.0"}) || !strings.Contains(dry.Kept[0].Reason, "approval.") {
		t.Fatalf("dry run keeps %+v, want svc@1.0.0 for its approvals", dry.Kept)
	}

	out := s.mustCustody("store", "retention", "run")
	if !strings.Contains(out, "deleted 2, kept 1") {
		t.Fatalf("retention run:\n%s", out)
	}
	if out, code := s.custody("fetch", "app@1.0.0", "--env", "staging", "-o", filepath.Join(work, "gone")); code == 0 {
		t.Fatalf("fetch of a deleted version succeeded:\n%s", out)
	}
	s.mustCustody("fetch", "app@1.0.2", "--env", "staging", "-o", filepath.Join(work, "kept"))
	s.mustCustody("fetch", "svc@1.0.0", "--env", "prod", "-o", filepath.Join(work, "kept-prod"))
	if out, code := s.custody("publish", filepath.Join(work, "app-1.0.0"), "--name", "app", "--version", "1.0.0", "--channel", "staging"); code == 0 || !strings.Contains(out, "deleted by retention") {
		t.Fatalf("re-publish of a deleted version: exit %d\n%s", code, out)
	}

	// The catalog logged each deletion, by the publisher.
	cat := catalogv1.NewCatalogServiceClient(s.conn("admin", "catalog"))
	for _, v := range []string{"1.0.0", "1.0.1"} {
		resp, err := cat.ListEvents(t.Context(), &catalogv1.ListEventsRequest{SubjectDigest: digests[v]})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, le := range resp.GetEntries() {
			e, err := tlog.ParseEntry(le.GetLeaf())
			if err != nil {
				t.Fatal(err)
			}
			if e.Type == tlog.TypeArtifactRetentionDeleted {
				found = e.Actor == "spiffe://custody.local/service/publisher" && strings.Contains(string(e.Details), `"version":"`+v+`"`)
				if !found {
					t.Errorf("event %s by %s: %s", e.Type, e.Actor, e.Details)
				}
			}
		}
		if !found {
			t.Errorf("no %s event about app@%s", tlog.TypeArtifactRetentionDeleted, v)
		}
	}
	// A second run has nothing left to do.
	if out := s.mustCustody("store", "retention", "run"); !strings.Contains(out, "deleted 0, kept 1") {
		t.Fatalf("second run:\n%s", out)
	}
}
