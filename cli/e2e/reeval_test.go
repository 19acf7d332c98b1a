package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
)

// reevalOSV is an advisory rated HIGH (CVSS 3.1 base 7.5) of an npm package
// no real advisory names.
const reevalOSV = `{"schema_version":"1.6.0","id":"GHSA-e2e0-reev-0001","modified":"2026-01-01T00:00:00Z",
"affected":[{"package":{"ecosystem":"npm","name":"custody-e2e-reeval"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"2.0.0"}]}]}],
"severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"}]}`

// TestReevaluationAfterImport (decisions 0097, 0098) on the dev stack: an
// artifact admitted to prod, with a URL from the broker and a token the
// edge serves, is affected by an advisory (HIGH) imported afterwards. The
// gatekeeper raises a finding.raised entry (custody findings shows it),
// counts it in custody_gatekeeper_findings_raised_total, the next
// admission to prod denies naming the advisory, the old decision gets no
// URL from the broker and the old token is refused by the edge.
func TestReevaluationAfterImport(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	ctx := t.Context()
	publishProdWithSBOM(t, s, work, "reevalapp", "pkg:npm/custody-e2e-reeval@1.0.0")
	gk := gatekeeperv1.NewGatekeeperServiceClient(s.conn("deployer", "gatekeeper"))
	broker := cdnbrokerv1.NewCdnBrokerServiceClient(s.conn("deployer", "cdn-broker"))
	hc := webClient(t, s)

	r, err := gk.Admit(ctx, &gatekeeperv1.AdmitRequest{Name: "reevalapp", Version: "1.0.0", Environment: "prod"})
	if err != nil || r.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
		t.Fatalf("admit to prod before the import: %v %v %v", r.GetDecision(), r.GetReasons(), err)
	}
	dec := r.GetDecisionEnvelope()
	u, err := broker.IssueDownloadUrl(ctx, &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: dec})
	if err != nil {
		t.Fatalf("broker before the import: %v", err)
	}
	edge := func() int {
		t.Helper()
		resp, err := hc.Get(u.GetUrls()[0])
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := edge(); code != http.StatusOK {
		t.Fatalf("edge before the import: %d", code)
	}
	if n := raisedMetric(t, s); n != 0 {
		t.Fatalf("findings raised before the import: %v", n)
	}

	advs := filepath.Join(work, "osv")
	if err := os.MkdirAll(advs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(advs, "GHSA-e2e0-reev-0001.json"), []byte(reevalOSV), 0o600); err != nil {
		t.Fatal(err)
	}
	s.mustCustody("advisories", "import", advs, "--as", "security")

	// The re-evaluation runs in the background: poll, with a deadline
	// generous for a loaded machine; no timing is asserted.
	eventually := func(what string, cond func() (bool, string)) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			ok, last := cond()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not seen within 90s; last: %s", what, last)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	var raised struct {
		Raised []struct {
			Advisory, Severity, Environment string
			LogIndex                        int64 `json:"log_index"`
			ImportIndex                     int64 `json:"import_log_index"`
		} `json:"raised"`
	}
	eventually("finding.raised in custody findings", func() (bool, string) {
		out, code := s.custody("findings", "reevalapp@1.0.0", "--json")
		raised.Raised = nil
		if err := json.NewDecoder(strings.NewReader(out)).Decode(&raised); err != nil || code != 1 {
			return false, out
		}
		return len(raised.Raised) == 1, out
	})
	if f := raised.Raised[0]; f.Advisory != "GHSA-e2e0-reev-0001" || f.Severity != "HIGH" || f.Environment != "prod" || f.ImportIndex <= 0 || f.LogIndex <= f.ImportIndex {
		t.Fatalf("raised finding %+v", f)
	}
	eventually("custody_gatekeeper_findings_raised_total", func() (bool, string) {
		n := raisedMetric(t, s)
		return n == 1, strconv.FormatFloat(n, 'g', -1, 64)
	})
	if out, code := s.custody("findings", "reevalapp@1.0.0"); code != 1 || !strings.Contains(out, "HIGH GHSA-e2e0-reev-0001 reevalapp@1.0.0") ||
		!strings.Contains(out, "raised HIGH GHSA-e2e0-reev-0001 in prod") {
		t.Fatalf("findings: exit %d, want the catalog's match and the raised finding:\n%s", code, out)
	}

	// Later admissions deny naming the advisory.
	r, err = gk.Admit(ctx, &gatekeeperv1.AdmitRequest{Name: "reevalapp", Version: "1.0.0", Environment: "prod"})
	if err != nil || r.GetDecision() != gatekeeperv1.Decision_DECISION_DENY || !strings.Contains(strings.Join(r.GetReasons(), " "), "GHSA-e2e0-reev-0001 (HIGH)") {
		t.Fatalf("admit to prod after the finding: %v %v %v", r.GetDecision(), r.GetReasons(), err)
	}
	// The old decision gets no URL, the old token is refused.
	eventually("broker refuses the old decision", func() (bool, string) {
		_, err := broker.IssueDownloadUrl(ctx, &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: dec})
		return status.Code(err) == codes.PermissionDenied && strings.Contains(err.Error(), "GHSA-e2e0-reev-0001"), status.Convert(err).Message()
	})
	eventually("edge refuses the old token", func() (bool, string) {
		code := edge()
		return code == http.StatusForbidden, strconv.Itoa(code)
	})
}

// raisedMetric reads custody_gatekeeper_findings_raised_total{prod,HIGH}
// from the gatekeeper's /metrics; 0 if absent.
func raisedMetric(t *testing.T, s *stack) float64 {
	t.Helper()
	body := get(t, "http://"+s.info.Services["gatekeeper"]["metrics"]+"/metrics")
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(line, "custody_gatekeeper_findings_raised_total{") &&
			strings.Contains(line, `environment="prod"`) && strings.Contains(line, `severity="HIGH"`) {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return v
		}
	}
	return 0
}
