package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
)

const e2eCycloneDX = `{"bomFormat":"CycloneDX","specVersion":"1.6","components":[
	{"type":"library","name":"yaml","version":"v3.0.1","purl":"pkg:golang/gopkg.in/yaml.v3@v3.0.1","licenses":[{"license":{"id":"MIT"}}]},
	{"type":"library","name":"net","version":"v0.30.0","purl":"pkg:golang/golang.org/x/net@v0.30.0","licenses":[{"expression":"BSD-3-Clause"}]}]}`

const e2eSPDX = `{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT","name":"lib","documentNamespace":"https://example.com/lib",
	"creationInfo":{"created":"2026-01-01T00:00:00Z","creators":["Tool: test"]},
	"packages":[{"name":"left-pad","SPDXID":"SPDXRef-left-pad","versionInfo":"1.3.0","downloadLocation":"NOASSERTION","licenseConcluded":"WTFPL",
	"externalRefs":[{"referenceCategory":"PACKAGE-MANAGER","referenceType":"purl","referenceLocator":"pkg:npm/left-pad@1.3.0"}]}]}`

// TestSBOMs publishes an artifact with an SBOM on the dev stack and reads
// the components back through custody sbom, which verifies the signed
// attestation and its log entry against the pinned trust root; attaches
// one later as the artifact's builder, refuses another builder and a
// second, different document; refuses a malformed SBOM before uploading.
func TestSBOMs(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(work, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cdx, spdx := write("app.cdx.json", e2eCycloneDX), write("lib.spdx.json", e2eSPDX)

	start := time.Now()
	out := s.mustCustody("publish", randomFile(t, work, "app", 4<<10), "--name", "app", "--version", "1.0.0", "--channel", "staging", "--sbom", cdx)
	t.Logf("publish with an SBOM took %v", time.Since(start))
	app := digestOf(out)
	if !strings.Contains(out, "SBOM of app@1.0.0 attached") || !strings.Contains(out, "components 2") {
		t.Fatalf("publish --sbom output:\n%s", out)
	}
	var got struct {
		Name, Version, Digest, Format string
		DocumentDigest                string `json:"document_digest"`
		AttachedBy                    string `json:"attached_by"`
		KeyID                         string `json:"key_id"`
		Components                    []struct{ PURL, Name, Version, License string }
	}
	start = time.Now()
	mustJSON(t, s.mustCustody("sbom", "app@1.0.0", "--json"), &got)
	t.Logf("custody sbom (fetch and verify) took %v", time.Since(start))
	if got.Name != "app" || got.Version != "1.0.0" || got.Digest != app || got.Format != "cyclonedx-json" ||
		got.AttachedBy != "spiffe://custody.local/builder/ci" || got.KeyID == "" || !strings.HasPrefix(got.DocumentDigest, "sha256:") {
		t.Errorf("custody sbom --json: %+v", got)
	}
	if len(got.Components) != 2 || got.Components[0].PURL != "pkg:golang/gopkg.in/yaml.v3@v3.0.1" || got.Components[0].License != "MIT" ||
		got.Components[1].Name != "net" || got.Components[1].License != "BSD-3-Clause" {
		t.Errorf("components: %+v", got.Components)
	}
	if out := s.mustCustody("sbom", app); !strings.Contains(out, "verified") || !strings.Contains(out, "pkg:golang/golang.org/x/net@v0.30.0") {
		t.Errorf("custody sbom by digest:\n%s", out)
	}
	// The attachment is in the artifact's audit trail.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out := s.mustCustody("audit", "app@1.0.0")
		if strings.Contains(out, "sbom.attached") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sbom.attached in the audit trail:\n%s", out)
		}
	}
	// Publishing again with the same SBOM is idempotent.
	if out := s.mustCustody("publish", filepath.Join(work, "app"), "--name", "app", "--version", "1.0.0", "--channel", "staging", "--sbom", cdx); !strings.Contains(out, "already attached") {
		t.Errorf("publish again with the same SBOM:\n%s", out)
	}

	// A malformed SBOM is refused before anything is uploaded.
	bad := write("bad.json", `{"bomFormat":"CycloneDX","specVersion":"1.6","components":{}}`)
	if out, code := s.custody("publish", randomFile(t, work, "other", 1<<10), "--name", "other", "--version", "1.0.0", "--channel", "staging", "--sbom", bad); code == 0 || !strings.Contains(out, "invalid SBOM") {
		t.Errorf("publish with a malformed SBOM: exit %d\n%s", code, out)
	}
	if out, code := s.custody("sbom", "other@1.0.0"); code == 0 {
		t.Errorf("other@1.0.0 exists after a refused publish:\n%s", out)
	}

	// Attached later: only by the artifact's builder, once.
	s.mustCustody("publish", randomFile(t, work, "lib", 2<<10), "--name", "lib", "--version", "2.0.0", "--channel", "staging")
	if out, code := s.custody("sbom", "lib@2.0.0"); code != 1 || !strings.Contains(out, "no SBOM") {
		t.Errorf("custody sbom before an attach: exit %d\n%s", code, out)
	}
	if out, code := s.custody("sbom", "attach", "lib@2.0.0", spdx, "--as", "builder2"); code != 1 || !strings.Contains(out, "PermissionDenied") && !strings.Contains(out, "only the builder") {
		t.Errorf("attach by another builder: exit %d\n%s", code, out)
	}
	// An edge: the publisher's policy refuses AttachSBOM, the catalog's
	// RecordSBOM; nothing is attached.
	edgePub := publisherv1.NewPublisherServiceClient(s.connAsService("edge", "publisher"))
	stream, err := edgePub.AttachSBOM(t.Context())
	if err == nil {
		stream.Send(&publisherv1.AttachSBOMRequest{Msg: &publisherv1.AttachSBOMRequest_Header{Header: &publisherv1.AttachSBOMHeader{Name: "lib", Version: "2.0.0", Size: int64(len(e2eSPDX))}}})
		stream.Send(&publisherv1.AttachSBOMRequest{Msg: &publisherv1.AttachSBOMRequest_Chunk{Chunk: []byte(e2eSPDX)}})
		_, err = stream.CloseAndRecv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("AttachSBOM by an edge: %v, want PermissionDenied", err)
	}
	_, err = catalogv1.NewCatalogServiceClient(s.connAsService("edge", "catalog")).RecordSBOM(t.Context(),
		&catalogv1.RecordSBOMRequest{Name: "lib", Version: "2.0.0", Document: []byte(e2eSPDX), Envelope: []byte(`{}`), AttachedBy: "spiffe://custody.local/builder/ci"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("RecordSBOM by an edge: %v, want PermissionDenied", err)
	}
	if out, code := s.custody("sbom", "lib@2.0.0"); code != 1 || !strings.Contains(out, "no SBOM") {
		t.Errorf("an SBOM attached after refusals: exit %d\n%s", code, out)
	}
	if out := s.mustCustody("sbom", "attach", "lib@2.0.0", spdx); !strings.Contains(out, "attached") || !strings.Contains(out, "spdx-json") {
		t.Errorf("attach by the builder:\n%s", out)
	}
	if out, code := s.custody("sbom", "attach", "lib@2.0.0", cdx); code != 1 || !strings.Contains(out, "already has an SBOM") {
		t.Errorf("a second, different SBOM: exit %d\n%s", code, out)
	}
	if out := s.mustCustody("sbom", "lib@2.0.0"); !strings.Contains(out, "left-pad 1.3.0  pkg:npm/left-pad@1.3.0  WTFPL") {
		t.Errorf("custody sbom lib@2.0.0:\n%s", out)
	}
}
