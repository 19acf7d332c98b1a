package attest

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/custody-dev/custody/libs/digest"
)

func TestSBOMStatementRoundTrip(t *testing.T) {
	doc := []byte(`{"bomFormat":"CycloneDX","specVersion":"1.6","components":[]}`)
	want := SBOMRef{ArtifactName: "tool@1.2.0", ArtifactDigest: digest.Of([]byte("artifact")),
		Format: SBOMFormatCycloneDX, DocumentDigest: digest.Of(doc)}
	b, err := SBOMStatement(want)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseStatement(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.SBOM()
	if err != nil {
		t.Fatal(err)
	}
	if *got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if !got.Describes(doc) {
		t.Error("the statement does not describe its own document")
	}
	if got.Describes(append([]byte(" "), doc...)) {
		t.Error("the statement describes another document")
	}
	if _, err := st.Artifact(); err == nil {
		t.Error("an SBOM statement parsed as provenance")
	}
	if _, err := st.Backup(); err == nil {
		t.Error("an SBOM statement parsed as a backup")
	}
}

func TestSBOMStatementRefused(t *testing.T) {
	good := SBOMRef{ArtifactName: "a@1", ArtifactDigest: digest.Of([]byte("a")), Format: SBOMFormatSPDX, DocumentDigest: digest.Of([]byte("d"))}
	for name, mod := range map[string]func(r *SBOMRef){
		"bad artifact digest": func(r *SBOMRef) { r.ArtifactDigest = "sha256:XYZ" },
		"bad document digest": func(r *SBOMRef) { r.DocumentDigest = "md5:00" },
		"unknown format":      func(r *SBOMRef) { r.Format = "spdx-tv" },
		"no name":             func(r *SBOMRef) { r.ArtifactName = "" },
	} {
		r := good
		mod(&r)
		if _, err := SBOMStatement(r); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	// Statements a hostile builder could hand-craft: read back refused.
	for name, pred := range map[string]string{
		"unknown format":   `{"format":"xml","document":"` + good.DocumentDigest + `"}`,
		"no document":      `{"format":"spdx-json"}`,
		"bad document":     `{"format":"spdx-json","document":"sha256:zz"}`,
		"extra field":      `{"format":"spdx-json","document":"` + good.DocumentDigest + `","inline":{}}`,
		"repeated field":   `{"format":"spdx-json","format":"cyclonedx-json","document":"` + good.DocumentDigest + `"}`,
		"predicate string": `"x"`,
	} {
		raw, err := json.Marshal(statementJSON{Type: StatementType, PredicateType: SBOMPredicateType, Predicate: json.RawMessage(pred),
			Subject: []Subject{{Name: "a@1", Digest: map[string]string{"sha256": good.ArtifactDigest[len(digest.Prefix):]}}}})
		if err != nil {
			t.Fatal(err)
		}
		st, err := ParseStatement(raw)
		if err != nil {
			continue // refused earlier: fine
		}
		if _, err := st.SBOM(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzSBOMStatement(f *testing.F) {
	b, _ := SBOMStatement(SBOMRef{ArtifactName: "a@1", ArtifactDigest: digest.Of(nil), Format: SBOMFormatCycloneDX, DocumentDigest: digest.Of(nil)})
	f.Add(b)
	f.Fuzz(func(t *testing.T, raw []byte) {
		st, err := ParseStatement(raw)
		if err != nil {
			return
		}
		got, err := st.SBOM()
		if err == nil && (!digest.Valid(got.ArtifactDigest) || !digest.Valid(got.DocumentDigest) || !validSBOMFormat(got.Format)) {
			t.Fatalf("accepted %+v", got)
		}
	})
}
