package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestApprovalQuorum: the dev stack's prod channel needs 2 of the approvers.
// An upload to prod waits; the same approver twice counts once; a builder
// cannot approve; the second distinct approver releases the upload, which is
// then admitted to prod with the prod channel's own key.
func TestApprovalQuorum(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	src := randomFile(t, work, "svc", 8<<10)

	publish := exec.Command(filepath.Join(s.bin, "custody"), "publish", src, "--name", "svc", "--version", "2.0.0", "--channel", "prod")
	publish.Env = append(os.Environ(), "CUSTODY_DEV_DIR="+s.dir)
	var out strings.Builder
	publish.Stdout, publish.Stderr = &out, &out
	if err := publish.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- publish.Wait() }()
	t.Cleanup(func() { _ = publish.Process.Kill() })

	id := waitForRequest(t, s, "svc")
	select {
	case err := <-done:
		t.Fatalf("publish to prod finished without approvals (%v):\n%s", err, out.String())
	default:
	}

	if o, code := s.custody("approve", id, "--as", "builder"); code == 0 || !strings.Contains(o, "PermissionDenied") {
		t.Fatalf("a builder approved: exit %d\n%s", code, o)
	}
	s.mustCustody("approve", id, "--as", "alice")
	s.mustCustody("approve", id, "--as", "alice")
	if list := s.mustCustody("approvals", "list", "--as", "carol"); !strings.Contains(list, "1/2 (alice)") {
		t.Fatalf("the same approver twice should count once:\n%s", list)
	}
	select {
	case err := <-done:
		t.Fatalf("publish finished with one approver (%v):\n%s", err, out.String())
	case <-time.After(500 * time.Millisecond):
	}
	s.mustCustody("approve", id, "--as", "bob")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("publish after the quorum: %v\n%s", err, out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("publish still waiting after the quorum:\n%s", out.String())
	}
	if o := s.mustCustody("admit", "svc@2.0.0", "--env", "prod"); !strings.Contains(o, "ALLOW") {
		t.Fatalf("approved prod artifact not admitted:\n%s", o)
	}
	if list := s.mustCustody("approvals", "list", "--all", "--as", "alice"); !strings.Contains(list, "signed") || !strings.Contains(list, "artifact-prod") {
		t.Fatalf("request not shown as signed with the prod key:\n%s", list)
	}

	// A rejection ends the wait with the reason.
	other := randomFile(t, work, "svc2", 8<<10)
	rejected := exec.Command(filepath.Join(s.bin, "custody"), "publish", other, "--name", "svc", "--version", "2.0.1", "--channel", "prod")
	rejected.Env = append(os.Environ(), "CUSTODY_DEV_DIR="+s.dir)
	var rout strings.Builder
	rejected.Stdout, rejected.Stderr = &rout, &rout
	if err := rejected.Start(); err != nil {
		t.Fatal(err)
	}
	rdone := make(chan error, 1)
	go func() { rdone <- rejected.Wait() }()
	t.Cleanup(func() { _ = rejected.Process.Kill() })
	id2 := waitForRequest(t, s, "2.0.1")
	s.mustCustody("reject", id2, "--reason", "not from the release branch", "--as", "carol")
	select {
	case err := <-rdone:
		if err == nil || !strings.Contains(rout.String(), "not from the release branch") {
			t.Fatalf("rejected publish: %v\n%s", err, rout.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("rejected publish still waiting:\n%s", rout.String())
	}

	// The rejection is final for svc@2.0.1: the same bytes re-uploaded to
	// staging, which needs no approvals, are not signed (ATTACKS.md #37).
	reup, code := s.custody("publish", other, "--name", "svc", "--version", "2.0.1", "--channel", "staging")
	if code == 0 || !strings.Contains(reup, "rejected on channel prod") || !strings.Contains(reup, "approver/carol") || !strings.Contains(reup, id2) {
		t.Fatalf("re-upload of the rejected svc@2.0.1 to staging: exit %d, want a refusal naming the rejection:\n%s", code, reup)
	}
	if out, code := s.custody("admit", "svc@2.0.1", "--env", "staging"); code == 0 || strings.Contains(out, "ALLOW") {
		t.Fatalf("rejected svc@2.0.1 admitted to staging:\n%s", out)
	}
}

// waitForRequest waits until a pending request whose line contains match is
// listed and returns its id.
func waitForRequest(t *testing.T, s *stack, match string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		list := s.mustCustody("approvals", "list", "--as", "alice")
		for _, line := range strings.Split(list, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] != "ID" && strings.Contains(line, match) {
				return f[0]
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no approval request for %q appeared", match)
	return ""
}
