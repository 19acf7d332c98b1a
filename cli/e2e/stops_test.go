package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"

	"github.com/custody-dev/custody/cli/internal/devstack"
)

// stopLimit is how soon a stop must take effect on the gatekeeper, the
// broker and every edge.
const stopLimit = 2 * time.Second

// TestStopStates runs docs/runbooks/kill-switch.md on the dev stack: the
// kill switch and a pause take effect on the gatekeeper, the broker and the
// edge within two seconds; lifting takes a quorum of distinct people; and a
// decision and a token issued before a stop or a key revocation are refused
// by the broker and the edge afterwards.
func TestStopStates(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	ctx := t.Context()
	s.mustCustody("publish", randomFile(t, work, "app", 4<<10), "--name", "app", "--version", "1", "--channel", "staging")
	gk := gatekeeperv1.NewGatekeeperServiceClient(s.conn("deployer", "gatekeeper"))
	broker := cdnbrokerv1.NewCdnBrokerServiceClient(s.conn("deployer", "cdn-broker"))
	hc := webClient(t, s)

	admit := func() (*gatekeeperv1.AdmitResponse, error) {
		return gk.Admit(ctx, &gatekeeperv1.AdmitRequest{Name: "app", Version: "1", Environment: "staging"})
	}
	mustAllow := func(when string) []byte {
		t.Helper()
		r, err := admit()
		if err != nil || r.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
			t.Fatalf("%s: admission %v %v %v", when, r.GetDecision(), r.GetReasons(), err)
		}
		return r.GetDecisionEnvelope()
	}
	urlFor := func(dec []byte) (string, error) {
		r, err := broker.IssueDownloadUrl(ctx, &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: dec})
		if err != nil {
			return "", err
		}
		return r.GetUrls()[0], nil
	}
	mustURL := func(dec []byte, when string) string {
		t.Helper()
		u, err := urlFor(dec)
		if err != nil {
			t.Fatalf("%s: broker: %v", when, err)
		}
		return u
	}
	edge := func(u string) int {
		t.Helper()
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// within waits until cond holds and fails if that takes more than
	// stopLimit from since.
	within := func(what string, since time.Time, cond func() bool) {
		t.Helper()
		for !cond() {
			if time.Since(since) > stopLimit {
				t.Fatalf("%s: not in effect %s after the stop", what, stopLimit)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("%s: in effect after %s", what, time.Since(since).Round(time.Millisecond))
	}
	refused := func(dec []byte) func() bool {
		return func() bool {
			_, err := urlFor(dec)
			return status.Code(err) == codes.PermissionDenied
		}
	}
	forbidden := func(u string) func() bool { return func() bool { return edge(u) == http.StatusForbidden } }
	// nextSecond waits until tokens minted now have an issue time after
	// the latest epoch: token times are whole seconds and edges round
	// against the token.
	nextSecond := func() { time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1100 * time.Millisecond))) }

	// Before any stop: a decision gets a URL and the edge serves it.
	dec := mustAllow("before any stop")
	u := mustURL(dec, "before any stop")
	if code := edge(u); code != http.StatusOK {
		t.Fatalf("edge before any stop: %d", code)
	}

	// 1. The kill switch: one admin.
	on := time.Now()
	out := s.mustCustody("killswitch", "on", "--reason", "e2e: drill")
	if !strings.Contains(out, "KILL SWITCH ON") || !strings.Contains(out, "2 distinct admins or approvers") {
		t.Fatalf("killswitch on:\n%s", out)
	}
	within("gatekeeper denies", on, func() bool {
		r, err := admit()
		return err == nil && r.GetDecision() == gatekeeperv1.Decision_DECISION_DENY && strings.Contains(strings.Join(r.GetReasons(), " "), "kill switch is on")
	})
	within("broker refuses", on, refused(dec))
	within("edge refuses", on, forbidden(u))
	if out, code := s.custody("killswitch", "status"); code != 1 || !strings.Contains(out, "ON since") {
		t.Fatalf("killswitch status while on: exit %d\n%s", code, out)
	}
	// A builder or a deployer cannot lift it.
	for _, as := range []string{"builder", "deployer"} {
		if out, code := s.custody("killswitch", "off", "--as", as); code == 0 || !strings.Contains(out, "PermissionDenied") {
			t.Fatalf("killswitch off as %s: exit %d\n%s", as, code, out)
		}
	}
	// The same admin twice counts once; alice is the second.
	for range 2 {
		if out := s.mustCustody("killswitch", "off"); !strings.Contains(out, "1 of 2 approvals, 1 more needed") {
			t.Fatalf("killswitch off by the admin:\n%s", out)
		}
	}
	// protojson varies its whitespace on purpose: decode, do not grep.
	out = s.mustCustody("killswitch", "off", "--as", "alice", "--json")
	var lift struct {
		Lifted bool `json:"lifted"`
	}
	if err := json.Unmarshal([]byte(out), &lift); err != nil || !lift.Lifted {
		t.Fatalf("killswitch off by alice: %v\n%s", err, out)
	}
	// Lifted: the old decision and the old token stay refused; a new
	// decision works.
	if !refused(dec)() || !forbidden(u)() {
		t.Fatal("a decision or token from before the kill switch is accepted after the lift")
	}
	lifted := time.Now()
	nextSecond()
	dec = mustAllow("after the kill switch")
	// The broker and edges learn the lift by polling, like the stop.
	within("broker issues again after the lift", lifted, func() bool {
		var err error
		u, err = urlFor(dec)
		return err == nil
	})
	within("edge serves again after the lift", lifted, func() bool { return edge(u) == http.StatusOK })

	// 2. Pause staging (one approval lifts it in the dev stack).
	on = time.Now()
	s.mustCustody("pause", "--env", "staging", "--reason", "e2e: bad rollout")
	within("gatekeeper denies staging", on, func() bool {
		r, err := admit()
		return err == nil && r.GetDecision() == gatekeeperv1.Decision_DECISION_DENY
	})
	within("broker refuses staging", on, refused(dec))
	within("edge refuses staging", on, forbidden(u))
	if r, err := gk.Admit(ctx, &gatekeeperv1.AdmitRequest{Name: "app", Version: "1", Environment: "dev"}); err != nil || r.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
		t.Fatalf("dev while staging is paused: %v %v %v", r.GetDecision(), r.GetReasons(), err)
	}
	if out, code := s.custody("pause", "--env", "staging", "--reason", "x", "--as", "deployer"); code == 0 || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("pause as deployer: exit %d\n%s", code, out)
	}
	if out := s.mustCustody("resume", "--env", "staging"); !strings.Contains(out, "LIFTED") {
		t.Fatalf("resume:\n%s", out)
	}
	if !refused(dec)() || !forbidden(u)() {
		t.Fatal("a decision or token from before the pause is accepted after the resume")
	}
	lifted = time.Now()
	nextSecond()
	dec = mustAllow("after the pause")
	// The broker and edges learn the resume by polling, like the stop.
	within("broker issues again after the resume", lifted, func() bool {
		var err error
		u, err = urlFor(dec)
		return err == nil
	})
	within("edge serves again after the resume", lifted, func() bool { return edge(u) == http.StatusOK })

	// 3. A key revocation: the decision and token from before it are
	// refused within the limit, with no stop to lift.
	s.mustCustody("keys", "rotate", "artifact")
	on = time.Now()
	s.mustCustody("keys", "revoke", "artifact", "--version", "1", "--reason", "e2e: revocation epoch")
	within("broker refuses a decision from before the revocation", on, refused(dec))
	within("edge refuses a token from before the revocation", on, forbidden(u))
	if _, err := urlFor(dec); err == nil || !strings.Contains(status.Convert(err).Message(), "key revocation") {
		t.Fatalf("broker after the revocation: %v, want a refusal naming the revocation", err)
	}
	if out := s.mustCustody("killswitch", "status", "--json"); !strings.Contains(out, `"revocationTime"`) {
		t.Fatalf("status after a revocation has no revocation time:\n%s", out)
	}

	// 4. Fail closed: with the gatekeeper stopped, the broker and the
	// edge refuse as unavailable once their last answer is too old.
	nextSecond()
	s.mustCustody("publish", randomFile(t, work, "app2", 4<<10), "--name", "app2", "--version", "1", "--channel", "staging")
	r, err := gk.Admit(ctx, &gatekeeperv1.AdmitRequest{Name: "app2", Version: "1", Environment: "staging"})
	if err != nil || r.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
		t.Fatalf("app2: %v %v %v", r.GetDecision(), r.GetReasons(), err)
	}
	u = mustURL(r.GetDecisionEnvelope(), "app2")
	stopGatekeeper(t, s)
	down := time.Now()
	within("broker fails closed without the gatekeeper", down.Add(3*time.Second), func() bool {
		_, err := urlFor(r.GetDecisionEnvelope())
		return status.Code(err) == codes.Unavailable
	})
	within("edge fails closed without the gatekeeper", down.Add(3*time.Second), func() bool { return edge(u) == http.StatusServiceUnavailable })
}

// stopGatekeeper stops the gatekeeper process and keeps it from answering:
// SIGSTOP, so that the supervisor does not restart it; SIGCONT at cleanup.
func stopGatekeeper(t *testing.T, s *stack) {
	t.Helper()
	p, err := os.FindProcess(s.info.PIDs["gatekeeper"])
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Signal(syscall.SIGCONT) })
}

func webClient(t *testing.T, s *stack) *http.Client {
	t.Helper()
	ca, err := os.ReadFile(devstack.Layout{Dir: s.dir}.WebCA())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}
