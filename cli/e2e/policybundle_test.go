package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// admitJSON is what `custody admit --json` prints, the fields this test
// reads.
type admitJSON struct {
	Decision          string   `json:"decision"`
	Reasons           []string `json:"reasons"`
	PolicyDigest      string   `json:"policy_digest"`
	PolicyRevision    string   `json:"policy_revision"`
	DryRun            bool     `json:"dry_run"`
	RealDecision      string   `json:"real_decision"`
	InputAttestations []struct {
		URI    string            `json:"uri"`
		Digest map[string]string `json:"digest"`
	} `json:"input_attestations"`
}

// dirHash is the bundle digest as docs/policy.md tells an operator to
// compute it: find . -type f | cut -c3- | LC_ALL=C sort | xargs -r
// sha256sum | sha256sum.
func dirHash(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		lines = append(lines, fmt.Sprintf("%x  %s\n", sha256.Sum256(b), filepath.ToSlash(rel)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(lines, func(a, b string) int { return strings.Compare(a[66:], b[66:]) })
	sum := sha256.Sum256([]byte(strings.Join(lines, "")))
	return "dirHash:" + hex.EncodeToString(sum[:])
}

// TestPolicyBundleAndDryRun: on the dev stack, the gatekeeper runs a
// policy bundle from a directory (the default policy under a revision of
// our own), and prod is in dry-run mode. A staging artifact admitted to
// prod, which the policy denies, is allowed with the policy's denial as a
// warning, the real decision deny, the bundle's revision and digest, and
// the provenance and SBOM it evaluated; the broker and edge deliver it
// under that allow. Staging is not in dry-run: a dev artifact is denied
// there as before.
func TestPolicyBundleAndDryRun(t *testing.T) {
	bundle := filepath.Join(t.TempDir(), "policy")
	if err := os.Mkdir(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	rego, err := os.ReadFile("../../services/gatekeeper/policy/admission.rego")
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{
		".manifest":      []byte(`{"revision": "e2e-2026-12-03.7", "roots": ["custody/admission"]}`),
		"admission.rego": rego,
	} {
		if err := os.WriteFile(filepath.Join(bundle, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := start(t, "--policy-bundle", bundle, "--dry-run-env", "prod")
	work := t.TempDir()
	doc := filepath.Join(work, "mit.cdx.json")
	if err := os.WriteFile(doc, []byte(`{"bomFormat":"CycloneDX","specVersion":"1.6","components":[
		{"type":"library","name":"ok","version":"2.0.0","purl":"pkg:npm/ok@2.0.0","licenses":[{"expression":"MIT"}]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s.mustCustody("publish", randomFile(t, work, "app", 4<<10), "--name", "app", "--version", "1.0.0", "--channel", "staging", "--sbom", doc)
	s.mustCustody("publish", randomFile(t, work, "devapp", 4<<10), "--name", "devapp", "--version", "1.0.0", "--channel", "dev")

	admit := func(ref, env string) (admitJSON, int) {
		t.Helper()
		out, code := s.custody("admit", ref, "--env", env, "--json")
		// A deny also prints its error after the object (stderr).
		var a admitJSON
		if err := json.NewDecoder(strings.NewReader(out)).Decode(&a); err != nil {
			t.Fatalf("admit %s --env %s --json: %v\n%s", ref, env, err, out)
		}
		return a, code
	}

	a, code := admit("app@1.0.0", "prod")
	denial := `warning: dry-run: channel "staging" may not deploy to "prod": "prod" accepts channels prod`
	if code != 0 || a.Decision != "allow" || !a.DryRun || a.RealDecision != "deny" || !slices.Contains(a.Reasons, denial) {
		t.Fatalf("admit app to prod (dry-run): exit %d, %+v; want an allow with %q and real_decision deny", code, a, denial)
	}
	if a.PolicyRevision != "e2e-2026-12-03.7" || a.PolicyDigest != dirHash(t, bundle) {
		t.Errorf("policy %s revision %q; want the bundle's %s, e2e-2026-12-03.7", a.PolicyDigest, a.PolicyRevision, dirHash(t, bundle))
	}
	var uris []string
	for _, in := range a.InputAttestations {
		if len(in.Digest["sha256"]) != 64 {
			t.Errorf("input attestation %s has no sha256 digest: %v", in.URI, in.Digest)
		}
		uris = append(uris, in.URI)
	}
	if want := []string{"custody:app@1.0.0?attestation=provenance", "custody:app@1.0.0?attestation=sbom"}; !slices.Equal(uris, want) {
		t.Errorf("input attestations %q, want %q", uris, want)
	}
	// The broker takes the dry-run allow like any allow (decision 0100).
	dst := filepath.Join(work, "app.out")
	s.mustCustody("fetch", "app@1.0.0", "--env", "prod", "-o", dst)
	sameFile(t, filepath.Join(work, "app"), dst)

	a, code = admit("devapp@1.0.0", "staging")
	if code == 0 || a.Decision != "deny" || a.DryRun || a.RealDecision != "deny" || slices.ContainsFunc(a.Reasons, func(r string) bool { return strings.HasPrefix(r, "warning:") }) {
		t.Errorf("admit devapp to staging (not dry-run): exit %d, %+v; want a plain deny", code, a)
	}
	a, code = admit("app@1.0.0", "staging")
	if code != 0 || a.Decision != "allow" || a.DryRun || a.RealDecision != "allow" {
		t.Errorf("admit app to staging: exit %d, %+v; want a plain allow", code, a)
	}

	// The gatekeeper logged which bundle it loaded.
	log, err := os.ReadFile(filepath.Join(s.dir, "logs", "gatekeeper.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "e2e-2026-12-03.7") || !strings.Contains(string(log), "dry-run") {
		t.Errorf("gatekeeper log does not name the bundle's revision and the dry-run environments:\n%s", log)
	}
}
