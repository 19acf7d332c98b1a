package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVEXSuppression, on the dev stack: an artifact whose SBOM holds a
// component with a HIGH advisory is denied for prod; a security identity
// logs a not_affected OpenVEX statement about that artifact and advisory;
// the next admission allows, naming the VEX log entry, and custody
// findings lists the finding as suppressed. Another artifact with the same
// component is still denied. An admin or a builder cannot add VEX.
func TestVEXSuppression(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	publishProdWithSBOM(t, s, work, "vexapp", "pkg:npm/custody-e2e-high@1.0.0")
	publishProdWithSBOM(t, s, work, "novexapp", "pkg:npm/custody-e2e-high@1.0.0")
	advs := filepath.Join(work, "osv")
	if err := os.MkdirAll(advs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(advs, "GHSA-e2e0-high-0001.json"), []byte(highOSV), 0o600); err != nil {
		t.Fatal(err)
	}
	s.mustCustody("advisories", "import", advs, "--as", "security")
	const denied = "component pkg:npm/custody-e2e-high@1.0.0 is affected by GHSA-e2e0-high-0001 (HIGH), denied in prod at HIGH and above"
	for _, app := range []string{"vexapp", "novexapp"} {
		if out, code := s.custody("admit", app+"@1.0.0", "--env", "prod"); code == 0 || !strings.Contains(out, denied) {
			t.Fatalf("admit %s before the VEX: exit %d, want a deny naming %q:\n%s", app, code, denied, out)
		}
	}

	var art struct{ Digest string }
	if err := json.Unmarshal([]byte(s.mustCustody("sbom", "vexapp@1.0.0", "--json")), &art); err != nil || art.Digest == "" {
		t.Fatalf("digest of vexapp: %v", err)
	}
	doc := filepath.Join(work, "vex.json")
	if err := os.WriteFile(doc, []byte(`{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://custody.example/vex/vexapp-1",
"author":"security","timestamp":"2026-12-03T10:00:00Z","version":1,"statements":[{"vulnerability":{"name":"GHSA-e2e0-high-0001"},
"products":[{"@id":"`+art.Digest+`","subcomponents":[{"@id":"pkg:npm/custody-e2e-high"}]}],"status":"not_affected",
"justification":"vulnerable_code_not_in_execute_path","impact_statement":"vexapp never calls the vulnerable function"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, as := range []string{"admin", "builder"} {
		if out, code := s.custody("vex", "add", doc, "vexapp@1.0.0", "--as", as); code == 0 || !strings.Contains(out, "PermissionDenied") {
			t.Errorf("vex add --as %s: exit %d, want PermissionDenied:\n%s", as, code, out)
		}
	}
	var added struct {
		Entry struct {
			Index string `json:"index"`
		} `json:"entry"`
	}
	if err := json.Unmarshal([]byte(s.mustCustody("vex", "add", doc, "vexapp@1.0.0", "--json")), &added); err != nil || added.Entry.Index == "" {
		t.Fatalf("vex add --json: %v", err)
	}
	list := s.mustCustody("vex", "list", "vexapp@1.0.0")
	if !strings.Contains(list, "VEX log index "+added.Entry.Index) || !strings.Contains(list, "/security/") || !strings.Contains(list, "not_affected GHSA-e2e0-high-0001") {
		t.Errorf("vex list:\n%s", list)
	}

	out, code := s.custody("admit", "vexapp@1.0.0", "--env", "prod")
	if code != 0 || !strings.Contains(out, "ALLOW") || !strings.Contains(out, "suppressed: GHSA-e2e0-high-0001") ||
		!strings.Contains(out, "by VEX log entry "+added.Entry.Index) {
		t.Errorf("admit vexapp after the VEX: exit %d, want an allow naming VEX entry %s:\n%s", code, added.Entry.Index, out)
	}
	if out, code := s.custody("admit", "novexapp@1.0.0", "--env", "prod"); code == 0 || !strings.Contains(out, denied) {
		t.Errorf("admit novexapp (same component, no VEX): exit %d, want a deny naming %q:\n%s", code, denied, out)
	}
	findings, code := s.custody("findings", "vexapp@1.0.0")
	if code != 0 || !strings.Contains(findings, "suppressed GHSA-e2e0-high-0001 pkg:npm/custody-e2e-high@1.0.0: not_affected by VEX log index "+added.Entry.Index) {
		t.Errorf("findings vexapp: exit %d, want the finding suppressed:\n%s", code, findings)
	}
	if out, code := s.custody("findings", "novexapp@1.0.0"); code == 0 || strings.Contains(out, "suppressed") {
		t.Errorf("findings novexapp: exit %d, want the finding standing:\n%s", code, out)
	}
}
