package e2e

import (
	"archive/zip"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAdvisoriesImport imports real OSV entries on the dev stack
// (decision 0081): from a directory as the security identity, then the same
// set zipped in the layout of an OSV export as an admin, which changes and
// logs nothing; a deployer is refused; the stored advisory is served; an
// artifact published with an SBOM holding lodash 4.17.11 has the lodash
// advisory as a finding, both ways, and one with 4.17.21 has none.
func TestAdvisoriesImport(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	for _, v := range []struct{ version, lodash string }{{"1.0.0", "4.17.11"}, {"1.1.0", "4.17.21"}} {
		cdx := filepath.Join(work, "bom-"+v.version+".json")
		doc := `{"bomFormat":"CycloneDX","specVersion":"1.6","components":[{"type":"library","name":"lodash","version":"` + v.lodash +
			`","purl":"pkg:npm/lodash@` + v.lodash + `"}]}`
		if err := os.WriteFile(cdx, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		s.mustCustody("publish", randomFile(t, work, "app-"+v.version, 4<<10), "--name", "app", "--version", v.version, "--channel", "staging", "--sbom", cdx)
	}
	src := filepath.Join("..", "..", "libs", "advisory", "testdata", "osv")
	type importJSON struct {
		Entry     struct{ Index string } `json:"entry"`
		Created   bool                   `json:"created"`
		SetDigest string                 `json:"setDigest"`
		Count     int                    `json:"count"`
		Added     int                    `json:"added"`
	}
	var first importJSON
	if err := json.Unmarshal([]byte(s.mustCustody("advisories", "import", src, "--json", "--as", "security")), &first); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(src, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !first.Created || first.Count != len(files) || first.Added != len(files) || !strings.HasPrefix(first.SetDigest, "sha256:") {
		t.Fatalf("first import: %+v, want %d advisories added", first, len(files))
	}

	// The same documents as an OSV export zip: already imported.
	zipPath := filepath.Join(t.TempDir(), "all.zip")
	f, err := os.Create(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	w := zip.NewWriter(f)
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		fw, err := w.Create(filepath.Base(p))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out := s.mustCustody("advisories", "import", zipPath, "--as", "admin")
	if !strings.Contains(out, "ALREADY IMPORTED "+itoa(uint64(len(files)))+" advisories as "+first.SetDigest) {
		t.Errorf("re-import from the zip:\n%s", out)
	}
	if out, code := s.custody("advisories", "import", zipPath, "--as", "deployer"); code == 0 || !strings.Contains(out, "PermissionDenied") {
		t.Errorf("import by a deployer: exit %d:\n%s", code, out)
	}
	if out := s.mustCustody("advisories", "show", "GHSA-jfh8-c2jp-5v3q"); !strings.Contains(out, "GHSA-jfh8-c2jp-5v3q CRITICAL") ||
		!strings.Contains(out, "Maven org.apache.logging.log4j:log4j-core") {
		t.Errorf("advisories show:\n%s", out)
	}

	// Findings, both ways: exit 1 with findings, 0 without.
	out, code := s.custody("findings", "app@1.0.0")
	if code != 1 || !strings.Contains(out, "CRITICAL GHSA-jf85-cpcp-j695 app@1.0.0 pkg:npm/lodash@4.17.11") ||
		!strings.Contains(out, "introduced 0, fixed 4.17.12") {
		t.Errorf("findings app@1.0.0: exit %d:\n%s", code, out)
	}
	if out, code := s.custody("findings", "app@1.1.0"); code != 0 || !strings.Contains(out, "no findings") {
		t.Errorf("findings app@1.1.0: exit %d:\n%s", code, out)
	}
	var byAdvisory struct {
		Findings []struct {
			Name, Version, AdvisoryID string
		} `json:"findings"`
	}
	out, code = s.custody("findings", "--advisory", "GHSA-jf85-cpcp-j695", "--json")
	// The JSON comes first; stderr's "1 findings" follows in the combined output.
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&byAdvisory); err != nil || code != 1 || len(byAdvisory.Findings) != 1 ||
		byAdvisory.Findings[0].Version != "1.0.0" {
		t.Errorf("findings --advisory: exit %d, %v:\n%s", code, err, out)
	}
}
