package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// gplCycloneDX lists a GPL component beside an MIT one.
const gplCycloneDX = `{"bomFormat":"CycloneDX","specVersion":"1.6","components":[
	{"type":"library","name":"x","version":"1.0.0","purl":"pkg:npm/x@1.0.0","licenses":[{"license":{"id":"GPL-3.0-only"}}]},
	{"type":"library","name":"ok","version":"2.0.0","purl":"pkg:npm/ok@2.0.0","licenses":[{"expression":"MIT OR Apache-2.0"}]}]}`

// TestLicencePolicy: on the dev stack with the default policy (decision
// 0092), an artifact published to prod with an SBOM holding a GPL
// component is denied for prod, naming the component, its licence and the
// environment, and admitted to staging and dev; one without an SBOM is
// admitted to prod with a warning.
func TestLicencePolicy(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	doc := filepath.Join(work, "gpl.cdx.json")
	if err := os.WriteFile(doc, []byte(gplCycloneDX), 0o600); err != nil {
		t.Fatal(err)
	}
	publishProd := func(name string, extra ...string) {
		t.Helper()
		args := append([]string{"publish", randomFile(t, work, name, 4<<10), "--name", name, "--version", "1.0.0", "--channel", "prod"}, extra...)
		publish := exec.Command(filepath.Join(s.bin, "custody"), args...)
		publish.Env = append(os.Environ(), "CUSTODY_DEV_DIR="+s.dir)
		var out strings.Builder
		publish.Stdout, publish.Stderr = &out, &out
		if err := publish.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- publish.Wait() }()
		t.Cleanup(func() { _ = publish.Process.Kill() })
		id := waitForRequest(t, s, name)
		s.mustCustody("approve", id, "--as", "alice")
		s.mustCustody("approve", id, "--as", "bob")
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("publish %s: %v\n%s", name, err, out.String())
			}
		case <-time.After(time.Minute):
			t.Fatalf("publish %s still waiting after the quorum:\n%s", name, out.String())
		}
	}
	publishProd("gplapp", "--sbom", doc)

	start := time.Now()
	out, code := s.custody("admit", "gplapp@1.0.0", "--env", "prod")
	t.Logf("admit with an SBOM (read and verified) took %v", time.Since(start))
	want := "component pkg:npm/x@1.0.0 has licence GPL-3.0-only, denied in prod"
	if code == 0 || strings.Contains(out, "ALLOW") || !strings.Contains(out, want) {
		t.Fatalf("admit gplapp to prod: exit %d, want a deny naming %q:\n%s", code, want, out)
	}
	if strings.Contains(out, "pkg:npm/ok@2.0.0") {
		t.Errorf("the MIT OR Apache-2.0 component is named in the deny:\n%s", out)
	}
	for _, env := range []string{"staging", "dev"} {
		if out := s.mustCustody("admit", "gplapp@1.0.0", "--env", env); !strings.Contains(out, "ALLOW") {
			t.Errorf("admit gplapp to %s:\n%s", env, out)
		}
	}

	publishProd("bareapp")
	if out := s.mustCustody("admit", "bareapp@1.0.0", "--env", "prod"); !strings.Contains(out, "ALLOW") || !strings.Contains(out, "no verified SBOM") {
		t.Errorf("admit bareapp to prod: want an allow with the no-SBOM warning:\n%s", out)
	}
}
