package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/cli/internal/devstack"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
)

// TestRevokeArtifact (decisions 0104, 0105) on the dev stack: an artifact
// admitted, with a URL from the broker that both edges serve (and cache),
// is revoked with custody revoke by an admin; a builder and a deployer
// are refused. Within 10 s of the revocation the old decision gets no URL,
// the old tokens are refused by both edges and the blob leaves both edge
// caches (purge reason artifact-revoked); a new admission is denied
// naming the revocation, revoking again changes nothing, and custody
// audit shows the artifact.revoked event.
func TestRevokeArtifact(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	ctx := t.Context()
	digest := digestOf(s.mustCustody("publish", randomFile(t, work, "revokeme", 64<<10), "--name", "revokeme", "--version", "1", "--channel", "staging"))
	gk := gatekeeperv1.NewGatekeeperServiceClient(s.conn("deployer", "gatekeeper"))
	broker := cdnbrokerv1.NewCdnBrokerServiceClient(s.conn("deployer", "cdn-broker"))
	hc := webClient(t, s)

	r, err := gk.Admit(ctx, &gatekeeperv1.AdmitRequest{Name: "revokeme", Version: "1", Environment: "staging"})
	if err != nil || r.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
		t.Fatalf("admit before the revocation: %v %v %v", r.GetDecision(), r.GetReasons(), err)
	}
	dec := r.GetDecisionEnvelope()
	u, err := broker.IssueDownloadUrl(ctx, &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: dec})
	if err != nil {
		t.Fatalf("broker before the revocation: %v", err)
	}
	if len(u.GetUrls()) < len(devstack.EdgeServices) {
		t.Fatalf("%d URLs, want one per dev edge", len(u.GetUrls()))
	}
	get := func(i int) int {
		t.Helper()
		resp, err := hc.Get(u.GetUrls()[i])
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	var cached []string
	for i, e := range devstack.EdgeServices {
		if code := get(i); code != http.StatusOK {
			t.Fatalf("edge %s before the revocation: %d", e, code)
		}
		cached = append(cached, filepath.Join(devstack.Layout{Dir: s.dir}.DataDir(e), "sha256-"+strings.TrimPrefix(digest, "sha256:")))
	}
	eventually(t, "both edges cache the blob", func() (bool, string) {
		for _, c := range cached {
			if _, err := os.Stat(c); err != nil {
				return false, err.Error()
			}
		}
		return true, ""
	})

	// Builders and deployers may not revoke; nothing changes.
	for _, as := range []string{"builder", "deployer"} {
		out, code := s.custody("revoke", "revokeme@1", "--reason", "not mine to revoke", "--as", as)
		if code == 0 || !strings.Contains(out, "PermissionDenied") && !strings.Contains(out, "only admins and security identities") {
			t.Fatalf("custody revoke as %s: exit %d\n%s", as, code, out)
		}
	}
	if _, err := broker.IssueDownloadUrl(ctx, &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: dec}); err != nil {
		t.Fatalf("a refused revoke changed something: %v", err)
	}

	revoked := time.Now()
	var rev struct {
		Revocation struct {
			Digest    string `json:"digest"`
			Reason    string `json:"reason"`
			RevokedBy string `json:"revokedBy"`
			LogIndex  string `json:"logIndex"`
		} `json:"revocation"`
		Name           string `json:"name"`
		AlreadyRevoked bool   `json:"alreadyRevoked"`
	}
	mustJSON(t, s.mustCustody("revoke", "revokeme@1", "--reason", "e2e: backdoor in revokeme 1", "--json"), &rev)
	if rev.Revocation.Digest != digest || rev.Name != "revokeme" || rev.AlreadyRevoked || !strings.Contains(rev.Revocation.RevokedBy, "/admin/") {
		t.Fatalf("custody revoke --json: %+v", rev)
	}
	logIndex, err := strconv.ParseInt(rev.Revocation.LogIndex, 10, 64)
	if err != nil || logIndex <= 0 {
		t.Fatalf("log index %q: %v", rev.Revocation.LogIndex, err)
	}

	// Issue 8: "within seconds". Each step's deadline is counted from the
	// revocation, like TestKeyRevocationPurgesTheEdges's.
	const purgeLimit = 10 * time.Second
	eventuallyWithin(t, "broker refuses the old decision", revoked, purgeLimit, func() (bool, string) {
		_, err := broker.IssueDownloadUrl(ctx, &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: dec})
		return status.Code(err) == codes.PermissionDenied && strings.Contains(err.Error(), "was revoked at"), status.Convert(err).Message()
	})
	for i, e := range devstack.EdgeServices {
		eventuallyWithin(t, "edge "+e+" refuses the old token", revoked, purgeLimit, func() (bool, string) {
			code := get(i)
			return code == http.StatusForbidden, strconv.Itoa(code)
		})
	}
	var out struct {
		Jobs []struct {
			jobOut
			Reason    string `json:"reason"`
			Reference string `json:"reference"`
		} `json:"jobs"`
	}
	eventuallyWithin(t, "the blob leaves both edge caches (purge artifact-revoked)", revoked, purgeLimit, func() (bool, string) {
		mustJSON(t, s.mustCustody("purge", "status", "--json"), &out)
		done := false
		for _, j := range out.Jobs {
			if j.Digest == digest && j.Reason == "artifact-revoked" && j.Done && len(j.Targets) == len(devstack.EdgeServices) {
				done = true
			}
		}
		for _, c := range cached {
			if _, err := os.Stat(c); !os.IsNotExist(err) {
				return false, fmt.Sprintf("job done %v, %s still cached (%v)", done, c, err)
			}
		}
		return done, fmt.Sprintf("jobs %+v", out.Jobs)
	})
	t.Logf("refused and purged from every edge %v after custody revoke (limit %v)", time.Since(revoked).Round(time.Millisecond), purgeLimit)

	// A new admission, in any environment, is denied naming the revocation.
	for _, env := range []string{"staging", "prod"} {
		r, err = gk.Admit(ctx, &gatekeeperv1.AdmitRequest{Name: "revokeme", Version: "1", Environment: env})
		why := strings.Join(r.GetReasons(), " ")
		if err != nil || r.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !strings.Contains(why, "was revoked at") ||
			!strings.Contains(why, fmt.Sprintf("artifact.revoked log index %d", logIndex)) || !strings.Contains(why, "e2e: backdoor in revokeme 1") {
			t.Fatalf("admit to %s after the revocation: %v %q %v", env, r.GetDecision(), r.GetReasons(), err)
		}
	}

	// Again: nothing changes; the first revocation is named.
	if out := s.mustCustody("revoke", digest, "--reason", "again", "--as", "security"); !strings.Contains(out, "ALREADY REVOKED") || !strings.Contains(out, "e2e: backdoor in revokeme 1") {
		t.Fatalf("custody revoke again:\n%s", out)
	}
	if out := s.mustCustody("killswitch", "status"); !strings.Contains(out, "revoked        "+digest) || !strings.Contains(out, fmt.Sprintf("(log index %d): e2e: backdoor in revokeme 1", logIndex)) {
		t.Fatalf("custody killswitch status does not list the revocation:\n%s", out)
	}
	if out := s.mustCustody("audit", digest); strings.Count(out, "artifact.revoked") != 1 {
		t.Fatalf("custody audit: want one artifact.revoked event:\n%s", out)
	}
}

// eventually polls cond until it holds, with a deadline generous for a
// loaded machine; no timing is asserted.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	eventuallyWithin(t, what, time.Now(), 60*time.Second, cond)
}

// eventuallyWithin polls cond until it holds and fails the test if it
// does not by limit after since: a timing the test asserts.
func eventuallyWithin(t *testing.T, what string, since time.Time, limit time.Duration, cond func() (bool, string)) {
	t.Helper()
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Since(since) > limit {
			t.Fatalf("%s: not seen within %v; last: %s", what, limit, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
