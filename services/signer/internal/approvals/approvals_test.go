package approvals_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/services/signer/internal/approvals"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

func mustApprove(t *testing.T, f *fixture, reqID string, who spiffeid.ID, want approvals.State) approvals.Request {
	t.Helper()
	r, err := f.svc.Approve(t.Context(), reqID, who)
	if err != nil {
		t.Fatalf("approve %s as %s: %v", reqID, who, err)
	}
	if r.State != want {
		t.Fatalf("after %s approved: state %s, want %s", who, r.State, want)
	}
	return r
}

func TestQuorumReachedReleasesAndSignedIsLogged(t *testing.T) {
	f := newFixture(t)
	done := f.await(t, t.Context(), subject(), 0)
	reqID := f.pendingID(t)
	mustApprove(t, f, reqID, alice, approvals.Pending)
	r := mustApprove(t, f, reqID, bob, approvals.Approved)
	if len(r.Approvals) != 2 || r.Quorum != 2 {
		t.Fatalf("approved request: %d approvals, quorum %d; want 2 and 2", len(r.Approvals), r.Quorum)
	}
	if err := <-done; err != nil {
		t.Fatalf("Await after the quorum: %v", err)
	}
	if err := f.svc.Signed(t.Context(), subject(), "key1"); err != nil {
		t.Fatal(err)
	}
	want := []string{approvals.EventRequested, approvals.EventApproved, approvals.EventApproved, approvals.EventSigned}
	if diff := cmp.Diff(want, f.log.types()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	all := f.svc.List(true)
	if len(all) != 1 || all[0].State != approvals.Signed {
		t.Fatalf("after signing: %+v, want one signed request", all)
	}
}

func TestBelowQuorumWaitsThenFailsAndRetryJoins(t *testing.T) {
	f := newFixture(t)
	done := f.await(t, t.Context(), subject(), 0)
	reqID := f.pendingID(t)
	mustApprove(t, f, reqID, alice, approvals.Pending)
	f.clock.Advance(approvals.DefaultMaxWait)
	err := <-done
	if !errors.Is(err, server.ErrNotApproved) {
		t.Fatalf("Await past the maximum wait: %v, want ErrNotApproved", err)
	}
	for _, want := range []string{reqID, "1 of 2 approvals", "custody approvals list", "custody approve " + reqID, "retry the upload", "joins the same request"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// The retry joins the same request with alice's approval kept.
	done = f.await(t, t.Context(), subject(), 0)
	if got := f.pendingID(t); got != reqID {
		t.Fatalf("retry opened request %s, want to join %s", got, reqID)
	}
	mustApprove(t, f, reqID, bob, approvals.Approved)
	if err := <-done; err != nil {
		t.Fatalf("retry after the second approval: %v", err)
	}
	if n := len(f.svc.List(true)); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestApprovedRequestReleasesRetryWithoutNewApprovals(t *testing.T) {
	f := newFixture(t, func(c *approvals.Config) { c.Quorum["prod"] = 1 })
	done := f.await(t, t.Context(), subject(), 0)
	mustApprove(t, f, f.pendingID(t), alice, approvals.Approved)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Signed(t.Context(), subject(), "k"); err != nil {
		t.Fatal(err)
	}
	// A retry (say the catalog was down after signing) within the
	// request's lifetime: no new approval needed, and it is logged again.
	f.clock.Advance(approvals.DefaultApprovalTTL + time.Hour) // the approval itself expired
	if err := f.svc.Await(t.Context(), subject()); err != nil {
		t.Fatalf("retry of a signed request: %v", err)
	}
	if err := f.svc.Signed(t.Context(), subject(), "k"); err != nil {
		t.Fatal(err)
	}
	if got := f.log.types(); len(got) != 4 || got[3] != approvals.EventSigned {
		t.Errorf("events %v, want requested, approved, signed, signed", got)
	}
	// After the request's lifetime, a retry needs approvals again.
	f.clock.Advance(approvals.DefaultRequestTTL)
	ctx, cancel := context.WithCancel(t.Context())
	done = f.await(t, ctx, subject(), 0)
	cancel()
	if err := <-done; !errors.Is(err, server.ErrNotApproved) || !strings.Contains(err.Error(), "0 of 1 approvals") {
		t.Fatalf("retry after the request expired: %v, want a new request with 0 of 1 approvals", err)
	}
}

func TestSameApproverTwiceCountsOnce(t *testing.T) {
	f := newFixture(t)
	done := f.await(t, t.Context(), subject(), 0)
	reqID := f.pendingID(t)
	mustApprove(t, f, reqID, alice, approvals.Pending)
	r := mustApprove(t, f, reqID, alice, approvals.Pending)
	if len(r.Approvals) != 1 {
		t.Fatalf("%d approvals after alice approved twice, want 1", len(r.Approvals))
	}
	if got := f.log.types(); len(got) != 2 {
		t.Errorf("events %v: a repeated approval must not be logged as a new one", got)
	}
	f.clock.Advance(approvals.DefaultMaxWait)
	if err := <-done; !errors.Is(err, server.ErrNotApproved) || !strings.Contains(err.Error(), "1 of 2") {
		t.Fatalf("Await: %v, want 1 of 2 approvals", err)
	}
}

// Each request is bound to its digest, channel and key (and what the
// approvers saw): approving another one does not release it.
func TestApprovalOfAnotherSubjectDoesNotCount(t *testing.T) {
	tests := map[string]func(*server.ApprovalSubject){
		"digest":  func(s *server.ApprovalSubject) { s.Digest = digestB },
		"channel": func(s *server.ApprovalSubject) { s.Channel = "staging" },
		"key":     func(s *server.ApprovalSubject) { s.KeyName = "artifact-prod" },
		"version": func(s *server.ApprovalSubject) { s.Version = "1.0.1" },
	}
	for name, edit := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, func(c *approvals.Config) { c.Quorum["prod"], c.Quorum["staging"] = 1, 1 })
			mine := f.await(t, t.Context(), subject(), 0)
			mineID := f.pendingID(t)
			other := subject()
			edit(&other)
			theirs := f.await(t, t.Context(), other, 2)
			var otherID string
			for _, r := range f.svc.List(false) {
				if r.ID != mineID {
					otherID = r.ID
				}
			}
			if otherID == "" {
				t.Fatal("the other subject joined the same request")
			}
			mustApprove(t, f, otherID, alice, approvals.Approved)
			if err := <-theirs; err != nil {
				t.Fatalf("other subject: %v", err)
			}
			if err := f.svc.Signed(t.Context(), subject(), "k"); !errors.Is(err, server.ErrNotApproved) {
				t.Errorf("Signed for the unapproved subject: %v, want ErrNotApproved", err)
			}
			f.clock.Advance(approvals.DefaultMaxWait)
			if err := <-mine; !errors.Is(err, server.ErrNotApproved) || !strings.Contains(err.Error(), "0 of 1") {
				t.Fatalf("my subject: %v, want 0 of 1 approvals", err)
			}
		})
	}
}

func TestExpiredApprovalDoesNotCount(t *testing.T) {
	f := newFixture(t, func(c *approvals.Config) { c.ApprovalTTL, c.MaxWait = time.Hour, 48*time.Hour })
	done := f.await(t, t.Context(), subject(), 0)
	reqID := f.pendingID(t)
	mustApprove(t, f, reqID, alice, approvals.Pending)
	f.clock.Advance(time.Hour)
	r := mustApprove(t, f, reqID, bob, approvals.Pending)
	if len(r.Approvals) != 1 || r.Approvals[0].Approver != bob.String() {
		t.Fatalf("counting approvals %+v, want bob's only", r.Approvals)
	}
	mustApprove(t, f, reqID, alice, approvals.Approved) // renewed
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestExpiredRequest(t *testing.T) {
	f := newFixture(t, func(c *approvals.Config) { c.RequestTTL, c.MaxWait = time.Hour, 2*time.Hour })
	done := f.await(t, t.Context(), subject(), 0)
	reqID := f.pendingID(t)
	mustApprove(t, f, reqID, alice, approvals.Pending)
	f.clock.Advance(time.Hour)
	err := <-done
	if !errors.Is(err, server.ErrNotApproved) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Await past the request's lifetime: %v, want expired", err)
	}
	if _, err := f.svc.Approve(t.Context(), reqID, bob); !errors.Is(err, approvals.ErrClosed) {
		t.Errorf("approve an expired request: %v, want ErrClosed", err)
	}
	if all := f.svc.List(true); len(all) != 1 || all[0].State != approvals.Expired {
		t.Errorf("listed %+v, want one expired request", all)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	f.await(t, ctx, subject(), 0)
	if got := f.pendingID(t); got == reqID {
		t.Error("a retry after expiry joined the expired request")
	}
}

func TestRejectEndsTheWait(t *testing.T) {
	f := newFixture(t)
	done := f.await(t, t.Context(), subject(), 0)
	reqID := f.pendingID(t)
	if _, err := f.svc.Reject(t.Context(), reqID, bob, "  "); !errors.Is(err, approvals.ErrInvalid) {
		t.Fatalf("reject without a reason: %v, want ErrInvalid", err)
	}
	mustApprove(t, f, reqID, alice, approvals.Pending)
	r, err := f.svc.Reject(t.Context(), reqID, bob, "commit abc123 is not on main")
	if err != nil || r.State != approvals.Rejected {
		t.Fatalf("reject: %v, state %s", err, r.State)
	}
	err = <-done
	if !errors.Is(err, server.ErrNotApproved) || !strings.Contains(err.Error(), bob.String()) || !strings.Contains(err.Error(), "commit abc123 is not on main") {
		t.Fatalf("Await after reject: %v, want ErrNotApproved naming bob and the reason", err)
	}
	if _, err := f.svc.Approve(t.Context(), reqID, carol); !errors.Is(err, approvals.ErrClosed) {
		t.Errorf("approve a rejected request: %v, want ErrClosed", err)
	}
	if got := f.log.last(); got.Type != approvals.EventRejected || got.Details.(map[string]any)["reason"] != "commit abc123 is not on main" {
		t.Errorf("last event %+v, want a rejection with the reason", got)
	}
}

func TestRejectAfterApprovalStopsTheSignature(t *testing.T) {
	f := newFixture(t, func(c *approvals.Config) { c.Quorum["prod"] = 1 })
	done := f.await(t, t.Context(), subject(), 0)
	reqID := f.pendingID(t)
	mustApprove(t, f, reqID, alice, approvals.Approved)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Reject(t.Context(), reqID, bob, "wrong build"); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Signed(t.Context(), subject(), "k"); !errors.Is(err, server.ErrNotApproved) {
		t.Fatalf("Signed after a rejection: %v, want ErrNotApproved", err)
	}
}

func TestBuilderCannotApproveOwnRequest(t *testing.T) {
	builderID := spiffeid.RequireFromString(builder)
	tests := map[string]struct {
		approvers []spiffeid.ID
		builder   spiffeid.ID
	}{
		"listed in --approvers":    {[]spiffeid.ID{alice, bob, builderID}, builderID},
		"builder under /approver/": {nil, carol},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, func(c *approvals.Config) { c.Approvers = tt.approvers; c.Quorum["prod"] = 1 })
			s := subject()
			s.BuilderID = tt.builder.String()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			f.await(t, ctx, s, 0)
			reqID := f.pendingID(t)
			if _, err := f.svc.Approve(t.Context(), reqID, tt.builder); !errors.Is(err, approvals.ErrDenied) || !strings.Contains(err.Error(), "own") {
				t.Fatalf("builder approves its own request: %v, want ErrDenied", err)
			}
			if rs := f.svc.List(false); len(rs[0].Approvals) != 0 {
				t.Fatalf("the builder's approval was recorded: %+v", rs[0].Approvals)
			}
		})
	}
}

func TestNonApproverDenied(t *testing.T) {
	tests := map[string]struct {
		approvers []spiffeid.ID
		who       spiffeid.ID
	}{
		"builder":                  {nil, id("/builder/ci")},
		"admin":                    {nil, id("/admin/ops")},
		"other trust domain":       {nil, spiffeid.RequireFromString("spiffe://evil.test/approver/alice")},
		"approver not in the list": {[]spiffeid.ID{alice, bob}, carol},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, func(c *approvals.Config) { c.Approvers = tt.approvers })
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			f.await(t, ctx, subject(), 0)
			reqID := f.pendingID(t)
			if _, err := f.svc.Approve(t.Context(), reqID, tt.who); !errors.Is(err, approvals.ErrDenied) {
				t.Errorf("approve as %s: %v, want ErrDenied", tt.who, err)
			}
			if _, err := f.svc.Reject(t.Context(), reqID, tt.who, "no"); !errors.Is(err, approvals.ErrDenied) {
				t.Errorf("reject as %s: %v, want ErrDenied", tt.who, err)
			}
		})
	}
}

func TestUnknownRequestNotFound(t *testing.T) {
	f := newFixture(t)
	if _, err := f.svc.Approve(t.Context(), "0123456789abcdef", alice); !errors.Is(err, approvals.ErrNotFound) {
		t.Errorf("approve unknown: %v, want ErrNotFound", err)
	}
}

func TestRestartKeepsState(t *testing.T) {
	f := newFixture(t)
	done := f.await(t, t.Context(), subject(), 0)
	reqID := f.pendingID(t)
	mustApprove(t, f, reqID, alice, approvals.Pending)
	f.clock.Advance(approvals.DefaultMaxWait)
	<-done

	// A new process on the same state directory.
	restarted, err := approvals.Open(f.cfg, f.log)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(f.svc.List(true), restarted.List(true)); diff != "" {
		t.Fatalf("state after restart (-before +after):\n%s", diff)
	}
	g := &fixture{svc: restarted, clock: f.clock, log: f.log, cfg: f.cfg}
	done = g.await(t, t.Context(), subject(), 0)
	if got := g.pendingID(t); got != reqID {
		t.Fatalf("retry after restart opened %s, want to join %s", got, reqID)
	}
	mustApprove(t, g, reqID, bob, approvals.Approved)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestCorruptStateFileRefused(t *testing.T) {
	valid := `{"version":1,"requests":[{"id":"0123456789abcdef","name":"app","version":"1","digest":"` + digestA + `","channel":"prod","key_name":"artifact",` +
		`"builder_id":"` + builder + `","source_repo":"","source_commit":"","state":"pending","quorum":2,"approvals":[],` +
		`"created_at":"2026-12-01T12:00:00Z","expires_at":"2026-12-04T12:00:00Z"}]}`
	tests := map[string]string{
		"truncated":      valid[:len(valid)/2],
		"not json":       "\x00\x01garbage",
		"empty":          "",
		"unknown field":  strings.Replace(valid, `"quorum"`, `"quorum_override":1,"quorum"`, 1),
		"future version": strings.Replace(valid, `"version":1,"requests"`, `"version":2,"requests"`, 1),
		"bad state":      strings.Replace(valid, `"pending"`, `"granted"`, 1),
		"bad digest":     strings.Replace(valid, digestA, "sha256:xyz", 1),
		"duplicate id":   strings.Replace(valid, `}]}`, `},`+valid[strings.Index(valid, `[{`)+1:], 1),
		"trailing data":  valid + "{}",
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			clock := newClock()
			cfg := baseConfig(t, clock)
			path := filepath.Join(cfg.StateDir, "approvals.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := approvals.Open(cfg, &fakeLog{})
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move it aside") {
				t.Fatalf("Open with a corrupt state file: %v, want an error naming the file and what to do", err)
			}
			if b, _ := os.ReadFile(path); string(b) != content {
				t.Error("the corrupt state file was changed")
			}
		})
	}
	t.Run("valid", func(t *testing.T) {
		cfg := baseConfig(t, newClock())
		if err := os.WriteFile(filepath.Join(cfg.StateDir, "approvals.json"), []byte(valid), 0o600); err != nil {
			t.Fatal(err)
		}
		svc, err := approvals.Open(cfg, &fakeLog{})
		if err != nil {
			t.Fatalf("Open with the valid seed: %v", err)
		}
		if n := len(svc.List(false)); n != 1 {
			t.Fatalf("%d pending requests, want 1", n)
		}
	})
}

func TestAuditDownApproveFailsAndDoesNotCount(t *testing.T) {
	f := newFixture(t, func(c *approvals.Config) { c.Quorum["prod"] = 1 })
	done := f.await(t, t.Context(), subject(), 0)
	reqID := f.pendingID(t)
	f.log.setDown(true)
	if _, err := f.svc.Approve(t.Context(), reqID, alice); !errors.Is(err, server.ErrApprovalsUnavailable) {
		t.Fatalf("approve with the log down: %v, want ErrApprovalsUnavailable", err)
	}
	if rs := f.svc.List(false); len(rs) != 1 || len(rs[0].Approvals) != 0 {
		t.Fatalf("after a failed approval: %+v, want the request pending with no approval", rs)
	}
	restarted, err := approvals.Open(f.cfg, f.log)
	if err != nil {
		t.Fatal(err)
	}
	if rs := restarted.List(false); len(rs) != 1 || len(rs[0].Approvals) != 0 {
		t.Fatalf("state file after a failed approval: %+v, want no approval", rs)
	}
	if _, err := f.svc.Reject(t.Context(), reqID, bob, "no"); !errors.Is(err, server.ErrApprovalsUnavailable) {
		t.Fatalf("reject with the log down: %v, want ErrApprovalsUnavailable", err)
	}
	f.log.setDown(false)
	mustApprove(t, f, reqID, alice, approvals.Approved)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.log.setDown(true)
	if err := f.svc.Signed(t.Context(), subject(), "k"); !errors.Is(err, server.ErrApprovalsUnavailable) {
		t.Fatalf("Signed with the log down: %v, want ErrApprovalsUnavailable (the envelope is not released)", err)
	}
}

func TestAuditDownNoRequestOpened(t *testing.T) {
	f := newFixture(t)
	f.log.setDown(true)
	err := f.svc.Await(t.Context(), subject())
	if !errors.Is(err, server.ErrApprovalsUnavailable) {
		t.Fatalf("Await with the log down: %v, want ErrApprovalsUnavailable", err)
	}
	if rs := f.svc.List(true); len(rs) != 0 {
		t.Fatalf("a request was opened without being logged: %+v", rs)
	}
}

func TestQuorumZeroChannelSignsAtOnce(t *testing.T) {
	f := newFixture(t)
	for _, ch := range []string{"dev", "unlisted"} {
		s := subject()
		s.Channel = ch
		if err := f.svc.Await(t.Context(), s); err != nil {
			t.Errorf("Await on %s: %v", ch, err)
		}
		if err := f.svc.Signed(t.Context(), s, "k"); err != nil {
			t.Errorf("Signed on %s: %v", ch, err)
		}
	}
	if rs, ev := f.svc.List(true), f.log.types(); len(rs) != 0 || len(ev) != 0 {
		t.Errorf("quorum 0: requests %+v, events %v; want none", rs, ev)
	}
}

func TestEventsCarryWhatApproversVouchFor(t *testing.T) {
	f := newFixture(t, func(c *approvals.Config) { c.Quorum["prod"] = 1 })
	done := f.await(t, t.Context(), subject(), 0)
	reqID := f.pendingID(t)
	mustApprove(t, f, reqID, alice, approvals.Approved)
	<-done
	if err := f.svc.Signed(t.Context(), subject(), "key-1"); err != nil {
		t.Fatal(err)
	}
	f.log.mu.Lock()
	defer f.log.mu.Unlock()
	if len(f.log.events) != 3 {
		t.Fatalf("%d events, want 3", len(f.log.events))
	}
	for i, e := range f.log.events {
		d := e.Details.(map[string]any)
		if e.SubjectDigest != digestA || d["request_id"] != reqID || d["channel"] != "prod" || d["key_name"] != "artifact" ||
			d["name"] != "app" || d["version"] != "1.0.0" || d["builder_id"] != builder || d["source_commit"] != "abc123" {
			t.Errorf("event %d (%s): %+v", i, e.Type, e)
		}
	}
	if d := f.log.events[1].Details.(map[string]any); d["approver"] != alice.String() {
		t.Errorf("approval event names %v, want alice", d["approver"])
	}
	if d := f.log.events[2].Details.(map[string]any); d["key_id"] != "key-1" || !cmp.Equal(d["approvers"], []string{alice.String()}) {
		t.Errorf("signed event %+v, want the key id and the approvers", d)
	}
}

func TestCallerGivesUp(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := f.await(t, ctx, subject(), 0)
	cancel()
	if err := <-done; !errors.Is(err, server.ErrNotApproved) || !strings.Contains(err.Error(), "0 of 2") {
		t.Fatalf("Await after the caller gave up: %v, want ErrNotApproved with the count", err)
	}
	if rs := f.svc.List(false); len(rs) != 1 {
		t.Fatalf("the request must stay pending for a retry: %+v", rs)
	}
}

func TestPendingRequestsBounded(t *testing.T) {
	f := newFixture(t, func(c *approvals.Config) { c.MaxPending = 2 })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for i, d := range []string{digestA, digestB} {
		s := subject()
		s.Digest = d
		f.await(t, ctx, s, 2*i)
	}
	s := subject()
	s.Digest = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	if err := f.svc.Await(t.Context(), s); !errors.Is(err, server.ErrApprovalsUnavailable) || !strings.Contains(err.Error(), "pending") {
		t.Fatalf("third pending request: %v, want ErrApprovalsUnavailable about the limit", err)
	}
	// Joining an existing one is still possible.
	done := f.await(t, ctx, subject(), 4)
	cancel()
	if err := <-done; !errors.Is(err, server.ErrNotApproved) {
		t.Fatalf("joining a pending request at the limit: %v, want to wait (ErrNotApproved once given up)", err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := func(c *approvals.Config) {}
	tests := map[string]struct {
		edit func(*approvals.Config)
		want string
	}{
		"valid":                   {ok, ""},
		"quorum above the list":   {func(c *approvals.Config) { c.Approvers = []spiffeid.ID{alice} }, "exceeds the 1 approvers"},
		"no state dir":            {func(c *approvals.Config) { c.StateDir = "" }, "--state-dir is required"},
		"no state dir, no quorum": {func(c *approvals.Config) { c.StateDir, c.Quorum = "", map[string]int{"dev": 0} }, ""},
		"approver elsewhere": {func(c *approvals.Config) {
			c.Approvers = []spiffeid.ID{alice, spiffeid.RequireFromString("spiffe://x.test/approver/a")}
		}, "not in trust domain"},
		"zero ttl":        {func(c *approvals.Config) { c.ApprovalTTL = 0 }, "--approval-ttl"},
		"negative quorum": {func(c *approvals.Config) { c.Quorum["prod"] = -1 }, "--quorum prod=-1"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := baseConfig(t, newClock())
			tt.edit(&cfg)
			err := cfg.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate: %v, want %q", err, tt.want)
			}
		})
	}
	cfg := baseConfig(t, newClock())
	if _, err := approvals.Open(cfg, nil); err == nil || !strings.Contains(err.Error(), "--catalog-addr") {
		t.Errorf("Open protected without an event log: %v, want --catalog-addr required", err)
	}
}

func TestParseQuorum(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]int
		bad  bool
	}{
		{in: "", want: map[string]int{}},
		{in: "prod=2,staging=1", want: map[string]int{"prod": 2, "staging": 1}},
		{in: " prod=2 , dev=0", want: map[string]int{"prod": 2, "dev": 0}},
		{in: "prod", bad: true},
		{in: "prod=two", bad: true},
		{in: "prod=-1", bad: true},
		{in: "prod=1,prod=2", bad: true},
		{in: "pr od=1", bad: true},
		{in: "=1", bad: true},
	}
	for _, tt := range tests {
		got, err := approvals.ParseQuorum(tt.in)
		if (err != nil) != tt.bad || !tt.bad && !cmp.Equal(got, tt.want) {
			t.Errorf("ParseQuorum(%q) = %v, %v", tt.in, got, err)
		}
	}
}

func TestParseApprovers(t *testing.T) {
	got, err := approvals.ParseApprovers([]string{alice.String() + "," + bob.String(), alice.String()})
	if err != nil || !slices.Equal(got, []spiffeid.ID{alice, bob}) {
		t.Errorf("ParseApprovers = %v, %v", got, err)
	}
	if _, err := approvals.ParseApprovers([]string{"alice"}); err == nil {
		t.Error("ParseApprovers accepted a name that is no SPIFFE ID")
	}
}
