package command

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
)

func TestPrintRequests(t *testing.T) {
	exp := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	reqs := []*signerv1.ApprovalRequest{{
		Id: "0123456789abcdef", Name: "app", Version: "1.0.0", Digest: "sha256:aaaa", BuilderId: "spiffe://custody.local/builder/ci",
		SourceRepo: "https://git.example/app", SourceCommit: "abc", Channel: "prod", KeyName: "artifact-prod", Quorum: 2,
		State: signerv1.ApprovalState_APPROVAL_STATE_PENDING, ExpiresAt: timestamppb.New(exp),
		Approvals: []*signerv1.Approval{{Approver: "spiffe://custody.local/approver/alice"}, {Approver: "spiffe://custody.local/team/approver/x"}},
	}, {
		Id: "fedcba9876543210", Name: "lib", Version: "2", Digest: "sha256:bbbb", BuilderId: "spiffe://custody.local/builder/ci",
		Channel: "staging", KeyName: "artifact", Quorum: 1, State: signerv1.ApprovalState_APPROVAL_STATE_REJECTED, ExpiresAt: timestamppb.New(exp),
	}}
	var out bytes.Buffer
	if err := printRequests(&out, reqs, true); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want a header and 2 rows:\n%s", len(lines), out.String())
	}
	for _, col := range []string{"ID", "NAME", "VERSION", "DIGEST", "BUILDER", "SOURCE", "CHANNEL", "KEY", "APPROVALS", "EXPIRES", "STATE"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("header %q has no %s", lines[0], col)
		}
	}
	for _, want := range []string{"0123456789abcdef", "sha256:aaaa", "https://git.example/app@abc", "artifact-prod",
		"2/2 (alice, spiffe://custody.local/team/approver/x)", "2026-12-04T12:00:00Z", "pending"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q has no %q", lines[1], want)
		}
	}
	for _, want := range []string{" - ", "0/1", "rejected"} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("row %q has no %q", lines[2], want)
		}
	}
}

func TestRejectNeedsReason(t *testing.T) {
	var out, errOut bytes.Buffer
	code := Execute(t.Context(), []string{"reject", "0123456789abcdef"}, func(string) string { return "" }, &out, &errOut)
	if code != ExitError || !strings.Contains(errOut.String(), "reason") {
		t.Fatalf("reject without --reason: exit %d, %q; want a usage error naming --reason", code, errOut.String())
	}
}
