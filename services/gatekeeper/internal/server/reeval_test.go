package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/libs/tlog"
)

// step runs the re-evaluation until it has read the whole log.
func (s *stack) step(t *testing.T) {
	t.Helper()
	for {
		more, err := s.findings.Step(t.Context())
		if err != nil {
			t.Fatalf("re-evaluation step: %v", err)
		}
		if !more {
			return
		}
	}
}

type raisedFinding struct {
	Advisory    string   `json:"advisory"`
	Severity    string   `json:"severity"`
	Name        string   `json:"name"`
	Digest      string   `json:"digest"`
	Environment string   `json:"environment"`
	Components  []string `json:"components"`
	Reasons     []string `json:"reasons"`
	ImportIndex int64    `json:"import_log_index"`
}

func (s *stack) raised(t *testing.T) []raisedFinding {
	t.Helper()
	var out []raisedFinding
	for _, e := range s.catalog.eventsOf(tlog.TypeFindingRaised) {
		var f raisedFinding
		if err := json.Unmarshal(e.Details, &f); err != nil {
			t.Fatal(err)
		}
		if e.Subject.Digest != f.Digest || !strings.HasSuffix(e.Actor, "/service/gatekeeper") {
			t.Fatalf("finding entry subject %q actor %q, details digest %q", e.Subject.Digest, e.Actor, f.Digest)
		}
		out = append(out, f)
	}
	return out
}

// TestReevaluationOnImport (decision 0097) on the real admission path (a
// genuinely signed and logged SBOM, the default policy's thresholds): an
// import re-evaluates only the artifacts admitted somewhere, raises one
// finding per newly affected artifact, advisory and environment, none on
// a re-import, counts it, puts its epoch in the stop state, and later
// admissions deny naming the advisory.
func TestReevaluationOnImport(t *testing.T) {
	s := newStackWith(t, stackOptions{logHead: true})
	real, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "libs", "advisory", "testdata", "osv", "GHSA-jf85-cpcp-j695.json"))
	if err != nil {
		t.Fatal(err)
	}
	comps := cdx(t, map[string]string{"pkg:npm/lodash@4.17.11": "MIT", "pkg:npm/high@1.0.0": "MIT"})
	app := s.publish(t, "app", "1.0.0", "prod")
	s.attachSBOM(t, app, comps, s.artifactKey)
	for _, env := range []string{"prod", "staging", "dev"} {
		wantDecision(t, s.admitAs(t, "app", "1.0.0", env), allow, "")
	}
	// Same components, never admitted: not re-evaluated.
	idle := s.publish(t, "idle", "1.0.0", "prod")
	s.attachSBOM(t, idle, comps, s.artifactKey)
	// Admitted, not affected.
	clean := s.publish(t, "clean", "1.0.0", "prod")
	s.attachSBOM(t, clean, cdx(t, map[string]string{"pkg:npm/left-pad@1.3.0": "MIT"}), s.artifactKey)
	wantDecision(t, s.admitAs(t, "clean", "1.0.0", "prod"), allow, "")

	s.step(t)
	if got := s.raised(t); len(got) != 0 {
		t.Fatalf("findings before any import: %+v", got)
	}

	// A HIGH advisory: prod denies at HIGH, staging only at CRITICAL.
	s.catalog.importAdvisories(t, s.td.TD, osvDoc(t, "GHSA-high-0000-0001", "high", "2.0.0", vecHigh))
	importIndex := int64(len(s.catalog.leaves) - 1)
	s.step(t)
	got := s.raised(t)
	if len(got) != 1 || got[0].Advisory != "GHSA-high-0000-0001" || got[0].Environment != "prod" || got[0].Severity != "HIGH" ||
		got[0].Digest != app.artifact.GetDigest() || got[0].Name != "app" || got[0].ImportIndex != importIndex ||
		!slices.Equal(got[0].Components, []string{"pkg:npm/high@1.0.0"}) || len(got[0].Reasons) != 1 {
		t.Fatalf("after the HIGH import: %+v, want one prod finding of app (import %d)", got, importIndex)
	}
	if n := raisedCount(t, s, "prod", "HIGH"); n != 1 {
		t.Fatalf("custody_gatekeeper_findings_raised_total{prod,HIGH} = %v, want 1", n)
	}
	st, err := s.client(t, "/edge/one").GetStopState(t.Context(), &gatekeeperv1.GetStopStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if fs := st.GetState().GetFindings(); len(fs) != 1 || fs[0].GetDigest() != app.artifact.GetDigest() || fs[0].GetEnvironment() != "prod" ||
		fs[0].GetAdvisoryId() != "GHSA-high-0000-0001" || fs[0].GetEpochTime() == nil {
		t.Fatalf("stop state findings %v, want app's prod epoch", fs)
	}
	wantDecision(t, s.admitAs(t, "app", "1.0.0", "prod"), deny, "GHSA-high-0000-0001 (HIGH), denied in prod")
	wantDecision(t, s.admitAs(t, "app", "1.0.0", "staging"), allow, "")

	// The same set again: nothing new.
	s.catalog.importAdvisories(t, s.td.TD, osvDoc(t, "GHSA-high-0000-0001", "high", "2.0.0", vecHigh))
	s.step(t)
	if got := s.raised(t); len(got) != 1 {
		t.Fatalf("after a re-import: %d findings, want still 1: %+v", len(got), got)
	}

	// A CRITICAL advisory: prod and staging, never dev.
	s.catalog.importAdvisories(t, s.td.TD, real)
	s.step(t)
	got = s.raised(t)[1:]
	var envs []string
	for _, f := range got {
		if f.Advisory != "GHSA-jf85-cpcp-j695" || f.Severity != "CRITICAL" || f.Digest != app.artifact.GetDigest() {
			t.Fatalf("unexpected finding %+v", f)
		}
		envs = append(envs, f.Environment)
	}
	slices.Sort(envs)
	if !slices.Equal(envs, []string{"prod", "staging"}) {
		t.Fatalf("CRITICAL findings in %v, want prod and staging", envs)
	}
	wantDecision(t, s.admitAs(t, "app", "1.0.0", "staging"), deny, "GHSA-jf85-cpcp-j695 (CRITICAL)")
	wantDecision(t, s.admitAs(t, "app", "1.0.0", "dev"), allow, "")
	wantDecision(t, s.admitAs(t, "clean", "1.0.0", "prod"), allow, "")
}

// raisedCount reads custody_gatekeeper_findings_raised_total{env, severity}.
func raisedCount(t *testing.T, s *stack, env, severity string) float64 {
	t.Helper()
	mfs, err := s.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "custody_gatekeeper_findings_raised_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["environment"] == env && labels["severity"] == severity {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
