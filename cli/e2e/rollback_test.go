package e2e

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// rollbackJSON is the part of a gatekeeper Rollback the test reads from
// `custody rollback … --json` (protojson field names).
type rollbackJSON struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	FromVersion string   `json:"fromVersion"`
	ToVersion   string   `json:"toVersion"`
	Environment string   `json:"environment"`
	RequestedBy string   `json:"requestedBy"`
	Approvals   []string `json:"approvals"`
	Quorum      int      `json:"quorum"`
	Granted     bool     `json:"granted"`
}

// TestRollbackApprovals runs docs/runbooks/rollback.md on the dev stack
// (decision 0078): with app@1.10.0 deployed to staging, admitting app@1.2.0
// there is denied with a message naming 1.10.0 and the request to make; an
// approver requests the rollback, cannot approve it, nobody approves twice,
// and once the dev stack's quorum (2) of other approvers approved, 1.2.0 is
// admitted and `rollback list` shows the rollback granted.
func TestRollbackApprovals(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	id := func(as string) string { return "spiffe://" + s.info.TrustDomain + "/approver/" + as }

	s.mustCustody("publish", randomFile(t, work, "app-1.10.0", 4<<10), "--name", "app", "--version", "1.10.0", "--channel", "staging")
	dst := filepath.Join(work, "app.out")
	if out := s.mustCustody("fetch", "app@1.10.0", "--env", "staging", "-o", dst, "--deploy"); !strings.Contains(out, "recorded deployment of app@1.10.0") {
		t.Fatalf("fetch --deploy of 1.10.0:\n%s", out)
	}
	s.mustCustody("publish", randomFile(t, work, "app-1.2.0", 4<<10), "--name", "app", "--version", "1.2.0", "--channel", "staging")

	// 1.2.0 is lower than 1.10.0 by semver (not by bytes): denied in
	// staging, naming 1.10.0 and the request; allowed in dev, where
	// nothing is deployed.
	wantReason := "app@1.2.0 is lower than app@1.10.0, the highest version deployed to staging: a rollback needs 2 approvals: " +
		"custody rollback request app --from 1.10.0 --to 1.2.0 --env staging --reason TEXT"
	mustDeny := func(when string) {
		t.Helper()
		out, code := s.custody("admit", "app@1.2.0", "--env", "staging")
		if code != 1 || !strings.Contains(out, "DENY app@1.2.0 to staging") || !strings.Contains(out, wantReason) {
			t.Fatalf("%s: admission of 1.2.0 to staging: exit %d, want a deny with %q:\n%s", when, code, wantReason, out)
		}
	}
	mustDeny("before any request")
	if out := s.mustCustody("admit", "app@1.2.0", "--env", "dev"); !strings.Contains(out, "ALLOW app@1.2.0 to dev") {
		t.Fatalf("admission of 1.2.0 to dev:\n%s", out)
	}

	// Hostile: a deployer can neither request nor list.
	request := []string{"rollback", "request", "app", "--from", "1.10.0", "--to", "1.2.0", "--env", "staging", "--reason", "e2e: 1.10.0 corrupts sessions"}
	if out, code := s.custody(append(request, "--as", "deployer")...); code == 0 || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("rollback request as deployer: exit %d\n%s", code, out)
	}
	if out, code := s.custody("rollback", "list", "--as", "deployer"); code == 0 || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("rollback list as deployer: exit %d\n%s", code, out)
	}

	// 1. alice requests.
	out := s.mustCustody(append(request, "--as", "alice", "--json")...)
	var req struct {
		Rollback rollbackJSON `json:"rollback"`
	}
	if err := json.Unmarshal([]byte(out), &req); err != nil {
		t.Fatalf("rollback request --json: %v\n%s", err, out)
	}
	rb := req.Rollback
	if rb.ID == "" || rb.Name != "app" || rb.FromVersion != "1.10.0" || rb.ToVersion != "1.2.0" || rb.Environment != "staging" ||
		rb.RequestedBy != id("alice") || rb.Quorum != 2 || rb.Granted || len(rb.Approvals) != 0 {
		t.Fatalf("rollback request: %+v\n%s", rb, out)
	}
	mustDeny("after the request")

	// 2. The requester cannot approve; bob approves, once only.
	if out, code := s.custody("rollback", "approve", rb.ID, "--as", "alice"); code == 0 || !strings.Contains(out, "PermissionDenied") || !strings.Contains(out, "requested this rollback and may not approve it") {
		t.Fatalf("rollback approve by the requester: exit %d\n%s", code, out)
	}
	if out := s.mustCustody("rollback", "approve", rb.ID, "--as", "bob"); !strings.Contains(out, "APPROVED "+rb.ID+" (1 of 2") {
		t.Fatalf("rollback approve by bob:\n%s", out)
	}
	if out, code := s.custody("rollback", "approve", rb.ID, "--as", "bob"); code == 0 || !strings.Contains(out, "PermissionDenied") || !strings.Contains(out, "approved this rollback already") {
		t.Fatalf("second rollback approve by bob: exit %d\n%s", code, out)
	}
	mustDeny("with one of two approvals")

	// 3. carol's approval reaches the quorum: granted, and 1.2.0 is admitted.
	if out := s.mustCustody("rollback", "approve", rb.ID, "--as", "carol"); !strings.Contains(out, "GRANTED "+rb.ID) {
		t.Fatalf("rollback approve by carol:\n%s", out)
	}
	if out, code := s.custody("admit", "app@1.2.0", "--env", "staging"); code != 0 || !strings.Contains(out, "ALLOW app@1.2.0 to staging") {
		t.Fatalf("admission of 1.2.0 to staging after the grant: exit %d\n%s", code, out)
	}

	// 4. The list (an auditor may read it) shows it granted by bob and carol.
	out = s.mustCustody("rollback", "list", "--as", "auditor", "--json")
	var list struct {
		Rollbacks []rollbackJSON `json:"rollbacks"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Rollbacks) != 1 {
		t.Fatalf("rollback list --json: %v\n%s", err, out)
	}
	got := list.Rollbacks[0]
	if got.ID != rb.ID || !got.Granted || got.RequestedBy != id("alice") || !slices.Equal(got.Approvals, []string{id("bob"), id("carol")}) ||
		got.FromVersion != "1.10.0" || got.ToVersion != "1.2.0" || got.Environment != "staging" {
		t.Fatalf("rollback list: %+v\n%s", got, out)
	}
}
