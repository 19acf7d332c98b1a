package server_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/digest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/libs/tlog"
)

const cdxDoc = `{"bomFormat":"CycloneDX","specVersion":"1.6","components":[
	{"type":"library","name":"yaml","version":"v3.0.1","purl":"pkg:golang/gopkg.in/yaml.v3@v3.0.1","licenses":[{"license":{"id":"MIT"}}]},
	{"type":"library","name":"x","purl":"pkg:golang/golang.org/x/net@v0.30.0","licenses":[{"expression":"BSD-3-Clause OR MIT"}]}]}`

// sbomEnvelope is a DSSE envelope over an SBOM statement naming doc as
// the SBOM of name with artifactDigest (the catalog does not check
// signatures).
func sbomEnvelope(name, artifactDigest, format string, doc []byte) []byte {
	st, err := attest.SBOMStatement(attest.SBOMRef{ArtifactName: name, ArtifactDigest: artifactDigest, Format: format, DocumentDigest: digest.Of(doc)})
	if err != nil {
		panic(err)
	}
	b, err := attest.SignEnvelope(attest.PayloadType, st, "k1", func([]byte) ([]byte, error) { return []byte("sig"), nil })
	if err != nil {
		panic(err)
	}
	return b
}

func sbomReq(name, version, content string, doc []byte) *catalogv1.RecordSBOMRequest {
	return &catalogv1.RecordSBOMRequest{Name: name, Version: version, Document: doc,
		Envelope: sbomEnvelope(name, digestOf(content), sbom.FormatCycloneDX, doc), AttachedBy: "spiffe://custody.test/builder/ci"}
}

// TestRecordSBOM: the publisher's SBOM of a logged artifact is logged as
// sbom.attached by the publisher about the artifact's digest, stored with
// the components the catalog parsed itself, and read back by any member,
// by name@version or digest, with the document on request. The same
// document again is idempotent and logs nothing.
func TestRecordSBOM(t *testing.T) {
	e := newEnv(t)
	pub := e.client(t, "/service/publisher")
	if _, err := pub.RecordArtifact(t.Context(), recordReq("app", "1.0.0", "a1")); err != nil {
		t.Fatal(err)
	}
	presence := func(what string, want catalogv1.SBOMPresence) {
		t.Helper()
		for _, r := range []*catalogv1.GetArtifactRequest{{Name: "app", Version: "1.0.0"}, {Digest: digestOf("a1")}} {
			got, err := pub.GetArtifact(t.Context(), r)
			if err != nil || got.GetSbom() != want {
				t.Errorf("%s: GetArtifact(%v) says SBOM %v, %v; want %v", what, r, got.GetSbom(), err, want)
			}
		}
	}
	presence("before an SBOM is attached", catalogv1.SBOMPresence_SBOM_PRESENCE_NONE)
	req := sbomReq("app", "1.0.0", "a1", []byte(cdxDoc))
	resp, err := pub.RecordSBOM(t.Context(), req, sbom.CallOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	presence("once attached", catalogv1.SBOMPresence_SBOM_PRESENCE_ATTACHED)
	if !resp.GetCreated() {
		t.Error("created = false for a first SBOM")
	}
	le, err := tlog.ParseEntry(resp.GetEntry().GetLeaf())
	if err != nil {
		t.Fatal(err)
	}
	if le.Type != tlog.TypeSBOMAttached || le.Actor != "spiffe://custody.test/service/publisher" || le.Subject.Digest != digestOf("a1") {
		t.Errorf("entry %+v: want an sbom.attached by the publisher about app@1.0.0's digest", le)
	}
	var details map[string]any
	if err := json.Unmarshal(le.Details, &details); err != nil {
		t.Fatal(err)
	}
	if details["name"] != "app" || details["version"] != "1.0.0" || details["digest"] != digestOf("a1") || details["format"] != "cyclonedx-json" ||
		details["document"] != digest.Of([]byte(cdxDoc)) || details["components"] != float64(2) || details["by"] != "spiffe://custody.test/builder/ci" ||
		details["envelope_sha256"] != strings.TrimPrefix(digest.Of(req.GetEnvelope()), "sha256:") {
		t.Errorf("details %v", details)
	}
	wantComponents := []*catalogv1.Component{
		{Purl: "pkg:golang/gopkg.in/yaml.v3@v3.0.1", Name: "yaml", Version: "v3.0.1", License: "MIT"},
		{Purl: "pkg:golang/golang.org/x/net@v0.30.0", Name: "x", License: "BSD-3-Clause OR MIT"},
	}
	check := func(what string, b *catalogv1.SBOM, withDoc bool) {
		t.Helper()
		if b.GetName() != "app" || b.GetVersion() != "1.0.0" || b.GetDigest() != digestOf("a1") || b.GetFormat() != "cyclonedx-json" ||
			b.GetDocumentDigest() != digest.Of([]byte(cdxDoc)) || b.GetAttachedBy() != "spiffe://custody.test/builder/ci" ||
			b.GetKeyId() != "k1" || b.GetLogIndex() != resp.GetEntry().GetIndex() || string(b.GetEnvelope()) != string(req.GetEnvelope()) {
			t.Errorf("%s: %v", what, b)
		}
		if len(b.GetComponents()) != len(wantComponents) {
			t.Fatalf("%s: components %v", what, b.GetComponents())
		}
		for i, c := range b.GetComponents() {
			w := wantComponents[i]
			if c.GetPurl() != w.GetPurl() || c.GetName() != w.GetName() || c.GetVersion() != w.GetVersion() || c.GetLicense() != w.GetLicense() {
				t.Errorf("%s: component %d = %v, want %v", what, i, c, w)
			}
		}
		if got := string(b.GetDocument()); withDoc && got != cdxDoc || !withDoc && got != "" {
			t.Errorf("%s: document %q (asked: %v)", what, got, withDoc)
		}
	}
	check("RecordSBOM", resp.GetSbom(), false)
	for _, p := range []string{"/edge/dev", "/service/gatekeeper", "/auditor/audit", "/builder/other"} {
		c := e.client(t, p)
		got, err := c.GetSBOM(t.Context(), &catalogv1.GetSBOMRequest{Name: "app", Version: "1.0.0"})
		if err != nil {
			t.Fatalf("GetSBOM by %s: %v", p, err)
		}
		check("GetSBOM by "+p, got.GetSbom(), false)
	}
	gk := e.client(t, "/service/gatekeeper")
	got, err := gk.GetSBOM(t.Context(), &catalogv1.GetSBOMRequest{Digest: digestOf("a1"), IncludeDocument: true}, sbom.CallOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	check("GetSBOM by digest with the document", got.GetSbom(), true)

	// Again with the same document (a retried publish): the stored SBOM,
	// nothing logged.
	before := logSize(t, e, gk)
	again, err := pub.RecordSBOM(t.Context(), sbomReq("app", "1.0.0", "a1", []byte(cdxDoc)), sbom.CallOptions()...)
	if err != nil || again.GetCreated() || again.GetEntry() != nil {
		t.Errorf("the same SBOM again: %v, %v; want the stored one, created false, no entry", again, err)
	}
	if after := logSize(t, e, gk); after != before {
		t.Errorf("the same SBOM again grew the log from %d to %d", before, after)
	}
	// It survives a restart, and its entry is among the digest's events.
	e.restart(t)
	gk = e.client(t, "/service/gatekeeper")
	if got, err := gk.GetSBOM(t.Context(), &catalogv1.GetSBOMRequest{Name: "app", Version: "1.0.0"}); err != nil {
		t.Errorf("GetSBOM after restart: %v", err)
	} else {
		check("after restart", got.GetSbom(), false)
	}
	if _, err := gk.GetSBOM(t.Context(), &catalogv1.GetSBOMRequest{Name: "app", Version: "2.0.0"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetSBOM of an unknown artifact: %v, want NotFound", err)
	}
	if _, err := gk.GetSBOM(t.Context(), &catalogv1.GetSBOMRequest{Name: "app", Version: "1.0.0", Digest: digestOf("a1")}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetSBOM by both: %v, want InvalidArgument", err)
	}
}

// TestRecordSBOMRefuses: only the publisher may record (the RPC policy),
// only for the artifact's own builder; a second, different document is
// AlreadyExists; malformed, oversized or bomb-like documents and
// envelopes over another artifact or document are InvalidArgument;
// AppendEvent cannot log an sbom.attached without its SBOM. Nothing
// refused reaches the log, and the first SBOM stays.
func TestRecordSBOMRefuses(t *testing.T) {
	e := newEnv(t)
	pub := e.client(t, "/service/publisher")
	for _, v := range []string{"1.0.0", "2.0.0"} {
		if _, err := pub.RecordArtifact(t.Context(), recordReq("app", v, "a"+v)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pub.RecordSBOM(t.Context(), sbomReq("app", "1.0.0", "a1.0.0", []byte(cdxDoc)), sbom.CallOptions()...); err != nil {
		t.Fatal(err)
	}
	reader := e.client(t, "/auditor/audit")
	before := logSize(t, e, reader)
	for _, p := range callers {
		if p == "/service/publisher" {
			continue
		}
		_, err := e.client(t, p).RecordSBOM(t.Context(), sbomReq("app", "2.0.0", "a2.0.0", []byte(cdxDoc)), sbom.CallOptions()...)
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("RecordSBOM by %s: %v, want PermissionDenied", p, err)
		}
	}
	with := func(name, version, content string, doc []byte, f func(r *catalogv1.RecordSBOMRequest)) *catalogv1.RecordSBOMRequest {
		r := sbomReq(name, version, content, doc)
		if f != nil {
			f(r)
		}
		return r
	}
	deep := []byte(`{"bomFormat":"CycloneDX","specVersion":"1.6","x":` + strings.Repeat("[", sbom.MaxJSONDepth+1) + strings.Repeat("]", sbom.MaxJSONDepth+1) + `}`)
	huge := []byte(`{"bomFormat":"CycloneDX","specVersion":"1.6","x":"` + strings.Repeat("a", sbom.MaxBytes) + `"}`)
	objects := []byte(`{"bomFormat":"CycloneDX","specVersion":"1.6","x":[` + strings.Repeat("{},", sbom.MaxObjects) + `{}]}`)
	spdxAsCDX := []byte(`{"spdxVersion":"SPDX-2.3","packages":[]}`)
	for _, tc := range []struct {
		name string
		req  *catalogv1.RecordSBOMRequest
		code codes.Code
	}{
		{"a hostile builder", with("app", "2.0.0", "a2.0.0", []byte(cdxDoc), func(r *catalogv1.RecordSBOMRequest) {
			r.AttachedBy = "spiffe://custody.test/builder/other"
		}), codes.PermissionDenied},
		{"an edge as the builder", with("app", "2.0.0", "a2.0.0", []byte(cdxDoc), func(r *catalogv1.RecordSBOMRequest) {
			r.AttachedBy = "spiffe://custody.test/edge/dev"
		}), codes.PermissionDenied},
		{"a second, different document", with("app", "1.0.0", "a1.0.0", []byte(strings.Replace(cdxDoc, "v3.0.1", "v3.0.2", 1)), nil), codes.AlreadyExists},
		{"another artifact's digest", with("app", "2.0.0", "a1.0.0", []byte(cdxDoc), nil), codes.InvalidArgument},
		{"another name", with("app", "2.0.0", "a2.0.0", []byte(cdxDoc), func(r *catalogv1.RecordSBOMRequest) {
			r.Envelope = sbomEnvelope("other", digestOf("a2.0.0"), sbom.FormatCycloneDX, r.Document)
		}), codes.InvalidArgument},
		{"another document", with("app", "2.0.0", "a2.0.0", []byte(cdxDoc), func(r *catalogv1.RecordSBOMRequest) { r.Document = []byte(cdxDoc + " ") }), codes.InvalidArgument},
		{"a provenance envelope", with("app", "2.0.0", "a2.0.0", []byte(cdxDoc), func(r *catalogv1.RecordSBOMRequest) {
			r.Envelope = envelope("app", "2.0.0", digestOf("a2.0.0"))
		}), codes.InvalidArgument},
		{"no envelope", with("app", "2.0.0", "a2.0.0", []byte(cdxDoc), func(r *catalogv1.RecordSBOMRequest) { r.Envelope = nil }), codes.InvalidArgument},
		{"no document", with("app", "2.0.0", "a2.0.0", nil, nil), codes.InvalidArgument},
		{"malformed", with("app", "2.0.0", "a2.0.0", []byte(`{"bomFormat":"CycloneDX","specVersion":"1.6","components":{}}`), nil), codes.InvalidArgument},
		{"not JSON", with("app", "2.0.0", "a2.0.0", []byte(`<bom/>`), nil), codes.InvalidArgument},
		{"CycloneDX 1.4", with("app", "2.0.0", "a2.0.0", []byte(`{"bomFormat":"CycloneDX","specVersion":"1.4"}`), nil), codes.InvalidArgument},
		{"SPDX named as CycloneDX", with("app", "2.0.0", "a2.0.0", spdxAsCDX, nil), codes.InvalidArgument},
		{"too deep", with("app", "2.0.0", "a2.0.0", deep, nil), codes.InvalidArgument},
		{"too many objects", with("app", "2.0.0", "a2.0.0", objects, nil), codes.InvalidArgument},
		{"over 8 MiB", with("app", "2.0.0", "a2.0.0", huge, nil), codes.InvalidArgument},
		{"unknown artifact", with("app", "9.9.9", "a2.0.0", []byte(cdxDoc), nil), codes.NotFound},
		{"bad name", with("../x", "2.0.0", "a2.0.0", []byte(cdxDoc), nil), codes.InvalidArgument},
	} {
		_, err := pub.RecordSBOM(t.Context(), tc.req, sbom.CallOptions()...)
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
	_, err := pub.AppendEvent(t.Context(), &catalogv1.AppendEventRequest{Type: tlog.TypeSBOMAttached, SubjectDigest: digestOf("a2.0.0"),
		Details: []byte(`{}`), Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "RecordSBOM") {
		t.Errorf("AppendEvent sbom.attached: %v, want InvalidArgument naming RecordSBOM", err)
	}
	if after := logSize(t, e, reader); after != before {
		t.Errorf("log grew from %d to %d entries on refused calls", before, after)
	}
	if _, err := reader.GetSBOM(t.Context(), &catalogv1.GetSBOMRequest{Name: "app", Version: "2.0.0"}); status.Code(err) != codes.NotFound {
		t.Errorf("app@2.0.0 has an SBOM after only refused attaches: %v", err)
	}
	got, err := reader.GetSBOM(t.Context(), &catalogv1.GetSBOMRequest{Name: "app", Version: "1.0.0", IncludeDocument: true}, sbom.CallOptions()...)
	if err != nil || string(got.GetSbom().GetDocument()) != cdxDoc {
		t.Errorf("the first SBOM after refusals: %v, %v", got, err)
	}
}

// TestRecordSBOMAtTheBounds records an SBOM of MaxComponents components
// near MaxBytes through the real gRPC server (the raised message limit)
// and reads it back with its document. Figures: go test -run
// TestRecordSBOMAtTheBounds -v ./internal/server/
func TestRecordSBOMAtTheBounds(t *testing.T) {
	e := newEnv(t)
	pub := e.client(t, "/service/publisher")
	if _, err := pub.RecordArtifact(t.Context(), recordReq("app", "1.0.0", "a1")); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString(`{"bomFormat":"CycloneDX","specVersion":"1.6","components":[`)
	for i := range sbom.MaxComponents {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"type":"library","name":"component-%05d-%s","version":"1.%d.0","purl":"pkg:npm/component-%05d@1.%d.0","licenses":[{"license":{"id":"MIT"}}]}`,
			i, strings.Repeat("n", 260), i, i, i)
	}
	b.WriteString(`]}`)
	doc := []byte(b.String())
	if len(doc) > sbom.MaxBytes {
		t.Fatalf("test document of %d bytes is over the bound", len(doc))
	}
	start := time.Now()
	resp, err := pub.RecordSBOM(t.Context(), sbomReq("app", "1.0.0", "a1", doc), sbom.CallOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	recorded := time.Since(start)
	if n := len(resp.GetSbom().GetComponents()); n != sbom.MaxComponents {
		t.Fatalf("%d components recorded, want %d", n, sbom.MaxComponents)
	}
	start = time.Now()
	got, err := e.client(t, "/service/gatekeeper").GetSBOM(t.Context(), &catalogv1.GetSBOMRequest{Digest: digestOf("a1"), IncludeDocument: true}, sbom.CallOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	read := time.Since(start)
	if len(got.GetSbom().GetDocument()) != len(doc) || len(got.GetSbom().GetComponents()) != sbom.MaxComponents ||
		got.GetSbom().GetComponents()[sbom.MaxComponents-1].GetPurl() != fmt.Sprintf("pkg:npm/component-%05d@1.%d.0", sbom.MaxComponents-1, sbom.MaxComponents-1) {
		t.Errorf("read back %d bytes, %d components", len(got.GetSbom().GetDocument()), len(got.GetSbom().GetComponents()))
	}
	t.Logf("%d-byte SBOM of %d components: RecordSBOM %v, GetSBOM with the document %v", len(doc), sbom.MaxComponents, recorded, read)
}
