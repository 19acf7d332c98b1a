package sbom_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/custody-dev/custody/libs/sbom"
)

func seed(f *testing.F, dir string) {
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds in testdata/%s: %v", dir, err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

func check(t *testing.T, got []sbom.Component, err error) {
	if err != nil {
		if !errors.Is(err, sbom.ErrInvalid) {
			t.Fatalf("error %v does not match ErrInvalid", err)
		}
		return
	}
	if len(got) > sbom.MaxComponents {
		t.Fatalf("%d components, more than %d", len(got), sbom.MaxComponents)
	}
}

func FuzzParseCycloneDX(f *testing.F) {
	seed(f, "cyclonedx")
	f.Add([]byte(`{"bomFormat":"CycloneDX","specVersion":"1.5","components":[{"name":"a","components":[{"name":"b"}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := sbom.ParseCycloneDX(b)
		check(t, got, err)
	})
}

func FuzzParseSPDX(f *testing.F) {
	seed(f, "spdx")
	f.Add([]byte(`{"spdxVersion":"SPDX-2.3","packages":[{"name":"a","externalRefs":[{"referenceCategory":"PACKAGE_MANAGER","referenceType":"purl","referenceLocator":"pkg:npm/a@1"}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := sbom.ParseSPDX(b)
		check(t, got, err)
	})
}

func FuzzParse(f *testing.F) {
	seed(f, "cyclonedx")
	seed(f, "spdx")
	f.Add([]byte(`{"bomFormat":"CycloneDX","spdxVersion":"SPDX-2.3"}`))
	f.Add([]byte(`[{"bomFormat":"CycloneDX"}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		format, got, err := sbom.Parse(b)
		check(t, got, err)
		if err == nil && format != sbom.FormatCycloneDX && format != sbom.FormatSPDX {
			t.Fatalf("format %q", format)
		}
	})
}
