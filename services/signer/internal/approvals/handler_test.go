package approvals_test

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/custody-dev/custody/libs/attest"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/services/signer/internal/approvals"
	"github.com/custody-dev/custody/services/signer/internal/keys/soft"
	"github.com/custody-dev/custody/services/signer/internal/lifecycle"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

// served is the signer (SignerService and ApprovalService) on a real
// in-process gRPC server with the production interceptors and policy.
type served struct {
	*fixture
	td   *identitytest.TrustDomain
	addr string
}

func serve(t *testing.T, edit ...func(*approvals.Config)) *served {
	t.Helper()
	f := newFixture(t, edit...)
	tdom := identitytest.New(t, td.Name())
	store, err := soft.Open(filepath.Join(t.TempDir(), "keystore.json"), []byte("0123456789abcdef-passphrase"), true, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	names := server.Keys{Artifact: "artifact", Decision: "decision"}
	if err := server.EnsureKeys(t.Context(), store, names); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	srv := rpc.NewServer(rpc.ServerConfig{Source: tdom.Source(t, "/service/signer"), TrustDomain: tdom.TD,
		Policy: server.Policy(tdom.TD), Logger: logger, Telemetry: telemetry.Discard("signer")})
	lc, err := lifecycle.Open(lifecycle.Config{Backend: store, ArtifactKey: names.Artifact, DecisionKey: names.Decision, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	signer := server.New(store, lc, logger)
	signer.SetApprovals(f.svc)
	signerv1.RegisterSignerServiceServer(srv, signer)
	signerv1.RegisterApprovalServiceServer(srv, approvals.NewHandler(f.svc, logger))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return &served{fixture: f, td: tdom, addr: l.Addr().String()}
}

func (s *served) conn(t *testing.T, as string) *grpc.ClientConn {
	t.Helper()
	c, err := rpc.Dial(s.addr, s.td.ID("/service/signer"), s.td.Source(t, as), telemetry.Discard("c"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (s *served) approver(t *testing.T, as string) signerv1.ApprovalServiceClient {
	return signerv1.NewApprovalServiceClient(s.conn(t, as))
}

func statement(t *testing.T, channel, builderID string) []byte {
	t.Helper()
	b, err := attest.NewProvenance(attest.Artifact{Name: "app", Version: "1.0.0", Digest: digestA, Channel: channel, BuilderID: builderID,
		SourceRepo: "https://git.example/app", SourceCommit: "abc123"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type signResult struct {
	resp *signerv1.SignArtifactResponse
	err  error
}

// sign calls SignArtifact as the publisher in the background and returns
// once the signer waits for approvals (or has answered).
func (s *served) sign(t *testing.T, channel, builderID string) <-chan signResult {
	t.Helper()
	pub := signerv1.NewSignerServiceClient(s.conn(t, "/service/publisher"))
	done := make(chan signResult, 1)
	returned := new(bool)
	go func() {
		resp, err := pub.SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: channel, Statement: statement(t, channel, builderID)})
		s.clock.setReturned(returned)
		done <- signResult{resp, err}
	}()
	s.clock.waitTimers(2, returned)
	return done
}

func TestGRPCQuorumReachedSigns(t *testing.T) {
	s := serve(t)
	done := s.sign(t, "prod", builder)
	alice := s.approver(t, "/approver/alice")
	list, err := alice.ListApprovalRequests(t.Context(), &signerv1.ListApprovalRequestsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetRequests()) != 1 {
		t.Fatalf("%d requests, want 1", len(list.GetRequests()))
	}
	got := list.GetRequests()[0]
	want := &signerv1.ApprovalRequest{Name: "app", Version: "1.0.0", Digest: digestA, Channel: "prod", KeyName: "artifact", BuilderId: builder,
		SourceRepo: "https://git.example/app", SourceCommit: "abc123", State: signerv1.ApprovalState_APPROVAL_STATE_PENDING, Quorum: 2}
	if diff := cmp.Diff(want, got, protocmp.Transform(), protocmp.IgnoreFields(&signerv1.ApprovalRequest{}, "id", "created_at", "expires_at")); diff != "" {
		t.Errorf("listed request (-want +got):\n%s", diff)
	}
	if got.GetExpiresAt().AsTime().Sub(got.GetCreatedAt().AsTime()) != approvals.DefaultRequestTTL {
		t.Errorf("request lives %s, want %s", got.GetExpiresAt().AsTime().Sub(got.GetCreatedAt().AsTime()), approvals.DefaultRequestTTL)
	}
	a, err := alice.Approve(t.Context(), &signerv1.ApproveRequest{Id: got.GetId()})
	if err != nil || a.GetRequest().GetState() != signerv1.ApprovalState_APPROVAL_STATE_PENDING || len(a.GetRequest().GetApprovals()) != 1 {
		t.Fatalf("alice approves: %v %v", a, err)
	}
	if _, err := s.approver(t, "/approver/bob").Approve(t.Context(), &signerv1.ApproveRequest{Id: got.GetId()}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("SignArtifact after the quorum: %v", r.err)
	}
	env, err := attest.ParseEnvelope(r.resp.GetEnvelope())
	if err != nil || len(env.Signatures) != 1 || env.Signatures[0].KeyID != r.resp.GetKeyId() {
		t.Fatalf("envelope: %v %+v", err, env)
	}
	all, err := alice.ListApprovalRequests(t.Context(), &signerv1.ListApprovalRequestsRequest{All: true})
	if err != nil || len(all.GetRequests()) != 1 || all.GetRequests()[0].GetState() != signerv1.ApprovalState_APPROVAL_STATE_SIGNED {
		t.Fatalf("list --all after signing: %v %v, want one signed request", all, err)
	}
	if pending, _ := alice.ListApprovalRequests(t.Context(), &signerv1.ListApprovalRequestsRequest{}); len(pending.GetRequests()) != 0 {
		t.Errorf("a signed request is listed as pending")
	}
	want2 := []string{approvals.EventRequested, approvals.EventApproved, approvals.EventApproved, approvals.EventSigned}
	if diff := cmp.Diff(want2, s.log.types()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestGRPCBelowQuorumFailedPrecondition(t *testing.T) {
	s := serve(t)
	done := s.sign(t, "prod", builder)
	reqID := s.pendingID(t)
	if _, err := s.approver(t, "/approver/alice").Approve(t.Context(), &signerv1.ApproveRequest{Id: reqID}); err != nil {
		t.Fatal(err)
	}
	s.clock.Advance(approvals.DefaultMaxWait)
	r := <-done
	if status.Code(r.err) != codes.FailedPrecondition {
		t.Fatalf("SignArtifact below the quorum: %v, want FailedPrecondition", r.err)
	}
	msg := status.Convert(r.err).Message()
	for _, want := range []string{reqID, "1 of 2 approvals", "custody approve " + reqID, "retry the upload"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not say %q", msg, want)
		}
	}
}

func TestGRPCRejectFailedPrecondition(t *testing.T) {
	s := serve(t)
	done := s.sign(t, "prod", builder)
	reqID := s.pendingID(t)
	bob := s.approver(t, "/approver/bob")
	if _, err := bob.Reject(t.Context(), &signerv1.RejectRequest{Id: reqID}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("reject without a reason: %v, want InvalidArgument", err)
	}
	rej, err := bob.Reject(t.Context(), &signerv1.RejectRequest{Id: reqID, Reason: "not from main"})
	if err != nil || rej.GetRequest().GetRejectedBy() != "spiffe://custody.test/approver/bob" || rej.GetRequest().GetRejectReason() != "not from main" {
		t.Fatalf("reject: %v %v", rej, err)
	}
	r := <-done
	if status.Code(r.err) != codes.FailedPrecondition || !strings.Contains(r.err.Error(), "approver/bob") || !strings.Contains(r.err.Error(), "not from main") {
		t.Fatalf("SignArtifact after reject: %v, want FailedPrecondition naming bob and the reason", r.err)
	}
	if _, err := s.approver(t, "/approver/alice").Approve(t.Context(), &signerv1.ApproveRequest{Id: reqID}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("approve a rejected request: %v, want FailedPrecondition", err)
	}
}

func TestGRPCAuthorization(t *testing.T) {
	s := serve(t, func(c *approvals.Config) { c.Approvers = []spiffeid.ID{alice, bob, id("/approver/dave")} })
	// dave built this one: he is listed, yet cannot approve it.
	done := s.sign(t, "prod", "spiffe://custody.test/approver/dave")
	reqID := s.pendingID(t)
	list := func(c signerv1.ApprovalServiceClient) error {
		_, err := c.ListApprovalRequests(t.Context(), &signerv1.ListApprovalRequestsRequest{})
		return err
	}
	approve := func(c signerv1.ApprovalServiceClient) error {
		_, err := c.Approve(t.Context(), &signerv1.ApproveRequest{Id: reqID})
		return err
	}
	reject := func(c signerv1.ApprovalServiceClient) error {
		_, err := c.Reject(t.Context(), &signerv1.RejectRequest{Id: reqID, Reason: "no"})
		return err
	}
	tests := []struct {
		as   string
		name string
		call func(signerv1.ApprovalServiceClient) error
		want codes.Code
	}{
		{"/admin/ops", "list", list, codes.OK},
		{"/approver/carol", "list", list, codes.OK},
		{"/builder/ci", "list", list, codes.PermissionDenied},
		{"/auditor/audit", "list", list, codes.PermissionDenied},
		{"/admin/ops", "approve", approve, codes.PermissionDenied},
		{"/builder/ci", "approve", approve, codes.PermissionDenied},
		{"/service/publisher", "approve", approve, codes.PermissionDenied},
		{"/builder/ci", "reject", reject, codes.PermissionDenied},
		{"/approver/carol", "approve (not in --approvers)", approve, codes.PermissionDenied},
		{"/approver/dave", "approve (own build)", approve, codes.PermissionDenied},
		{"/approver/alice", "approve", approve, codes.OK},
	}
	for _, tt := range tests {
		if got := status.Code(tt.call(s.approver(t, tt.as))); got != tt.want {
			t.Errorf("%s as %s: %v, want %v", tt.name, tt.as, got, tt.want)
		}
	}
	if _, err := s.approver(t, "/approver/alice").Approve(t.Context(), &signerv1.ApproveRequest{Id: "ffffffffffffffff"}); status.Code(err) != codes.NotFound {
		t.Errorf("approve an unknown request: %v, want NotFound", err)
	}
	if rs := s.svc.List(false); len(rs) != 1 || len(rs[0].Approvals) != 1 || rs[0].Approvals[0].Approver != alice.String() {
		t.Fatalf("approvals %+v, want alice's only", rs)
	}
	s.clock.Advance(approvals.DefaultMaxWait)
	<-done
}

func TestGRPCAuditDownApproveUnavailable(t *testing.T) {
	s := serve(t)
	done := s.sign(t, "prod", builder)
	reqID := s.pendingID(t)
	s.log.setDown(true)
	if _, err := s.approver(t, "/approver/alice").Approve(t.Context(), &signerv1.ApproveRequest{Id: reqID}); status.Code(err) != codes.Unavailable {
		t.Fatalf("approve with the log down: %v, want Unavailable", err)
	}
	s.log.setDown(false)
	list, err := s.approver(t, "/approver/alice").ListApprovalRequests(t.Context(), &signerv1.ListApprovalRequestsRequest{})
	if err != nil || len(list.GetRequests()[0].GetApprovals()) != 0 {
		t.Fatalf("after a failed approval: %v %v, want none recorded", list, err)
	}
	s.clock.Advance(approvals.DefaultMaxWait)
	if r := <-done; status.Code(r.err) != codes.FailedPrecondition || !strings.Contains(r.err.Error(), "0 of 2") {
		t.Fatalf("SignArtifact: %v, want FailedPrecondition with 0 of 2", r.err)
	}
}

func TestGRPCQuorumZeroSignsAtOnce(t *testing.T) {
	s := serve(t)
	pub := signerv1.NewSignerServiceClient(s.conn(t, "/service/publisher"))
	if _, err := pub.SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "dev", Statement: statement(t, "dev", builder)}); err != nil {
		t.Fatalf("SignArtifact on a quorum-0 channel: %v", err)
	}
	if n := len(s.log.types()); n != 0 {
		t.Errorf("%d events for a quorum-0 channel, want none", n)
	}
}

// TestRejectionIsFinalForTheNameVersion: bytes rejected for prod cannot be
// re-uploaded to an unprotected channel and signed there (ATTACKS #37),
// through SignArtifact or the batch, and the rejection outlives the
// request's lifetime and a restart; another version signs.
func TestRejectionIsFinalForTheNameVersion(t *testing.T) {
	s := serve(t)
	done := s.sign(t, "prod", builder)
	reqID := s.pendingID(t)
	if _, err := s.approver(t, "/approver/bob").Reject(t.Context(), &signerv1.RejectRequest{Id: reqID, Reason: "CVE in the base image"}); err != nil {
		t.Fatal(err)
	}
	<-done
	pub := signerv1.NewSignerServiceClient(s.conn(t, "/service/publisher"))
	refused := func(when string) {
		t.Helper()
		_, err := pub.SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "dev", Statement: statement(t, "dev", builder)})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "rejected on channel prod") ||
			!strings.Contains(err.Error(), "approver/bob") || !strings.Contains(err.Error(), reqID) || !strings.Contains(err.Error(), "new version") {
			t.Fatalf("%s: SignArtifact of app@1.0.0 on dev: %v, want FailedPrecondition naming the rejection", when, err)
		}
		resp, err := pub.SignArtifacts(t.Context(), &signerv1.SignArtifactsRequest{Items: []*signerv1.SignArtifactRequest{{Channel: "dev", Statement: statement(t, "dev", builder)}}})
		if err != nil || len(resp.GetResults()) != 1 || codes.Code(resp.GetResults()[0].GetCode()) != codes.FailedPrecondition ||
			!strings.Contains(resp.GetResults()[0].GetMessage(), "rejected on channel prod") {
			t.Fatalf("%s: SignArtifacts of app@1.0.0 on dev: %v %v, want FailedPrecondition naming the rejection", when, resp, err)
		}
	}
	refused("after the rejection")

	other, err := attest.NewProvenance(attest.Artifact{Name: "app", Version: "1.0.1", Digest: digestA, Channel: "dev", BuilderID: builder})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "dev", Statement: other}); err != nil {
		t.Fatalf("app@1.0.1 on dev: %v", err)
	}

	// Long after the request's lifetime, once another request has made the
	// store drop closed requests, and after a restart.
	s.clock.Advance(3 * (approvals.DefaultApprovalTTL + approvals.DefaultRequestTTL))
	later, err := attest.NewProvenance(attest.Artifact{Name: "app", Version: "2.0.0", Digest: digestA, Channel: "prod", BuilderID: builder})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	pub.SignArtifact(ctx, &signerv1.SignArtifactRequest{Channel: "prod", Statement: later}) // opens a request, then gives up waiting
	refused("after the request's lifetime")
	restarted, err := approvals.Open(s.cfg, s.log)
	if err != nil {
		t.Fatal(err)
	}
	if err := restarted.Rejection(server.ApprovalSubject{Name: "app", Version: "1.0.0"}); err == nil || !strings.Contains(err.Error(), reqID) {
		t.Fatalf("after a restart: Rejection = %v, want the rejection of %s", err, reqID)
	}
}
