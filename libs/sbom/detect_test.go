package sbom_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/sbom"
)

// The formats are the strings SBOM statements name (decision 0075).
func TestFormatsAreTheStatementFormats(t *testing.T) {
	if sbom.FormatCycloneDX != attest.SBOMFormatCycloneDX || sbom.FormatSPDX != attest.SBOMFormatSPDX {
		t.Errorf("sbom formats %q, %q; attest formats %q, %q", sbom.FormatCycloneDX, sbom.FormatSPDX, attest.SBOMFormatCycloneDX, attest.SBOMFormatSPDX)
	}
}

func TestParseDetectsTheFormat(t *testing.T) {
	for _, tt := range []struct{ file, format string }{
		{"testdata/cyclonedx/valid-license-expression.json", sbom.FormatCycloneDX},
		{"testdata/spdx/SPDXJSONExample-v2.3.spdx.json", sbom.FormatSPDX},
	} {
		b, err := os.ReadFile(tt.file)
		if err != nil {
			t.Fatal(err)
		}
		format, got, err := sbom.Parse(b)
		if err != nil || format != tt.format || len(got) == 0 {
			t.Errorf("%s: format %q, %d components, %v; want %s with components", tt.file, format, len(got), err, tt.format)
		}
	}
}

func TestParseRefusesUndetectable(t *testing.T) {
	for name, doc := range map[string]string{
		"both":      `{"bomFormat":"CycloneDX","specVersion":"1.5","spdxVersion":"SPDX-2.3"}`,
		"neither":   `{"name":"x"}`,
		"array":     `[{"bomFormat":"CycloneDX"}]`,
		"not json":  `bomFormat: CycloneDX`,
		"empty":     ``,
		"old spdx":  `{"spdxVersion":"SPDX-2.2","packages":[]}`,
		"old cdx":   `{"bomFormat":"CycloneDX","specVersion":"1.4"}`,
		"too deep":  strings.Repeat(`{"a":`, sbom.MaxJSONDepth+1) + `1` + strings.Repeat(`}`, sbom.MaxJSONDepth+1),
		"too large": `{"bomFormat":"CycloneDX","x":"` + strings.Repeat("a", sbom.MaxBytes) + `"}`,
	} {
		_, _, err := sbom.Parse([]byte(doc))
		if !errors.Is(err, sbom.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, err := sbom.ParseFormat("xml", []byte(`{}`)); !errors.Is(err, sbom.ErrInvalid) {
		t.Errorf("ParseFormat(xml): %v, want ErrInvalid", err)
	}
}
