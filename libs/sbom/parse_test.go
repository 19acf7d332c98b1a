package sbom_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/sbom"
)

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseCycloneDXExamples(t *testing.T) {
	got, err := sbom.ParseCycloneDX(read(t, "cyclonedx/valid-license-expression.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := []sbom.Component{{Name: "tomcat-catalina", Version: "9.0.14", License: "EPL-2.0 OR GPL-2.0 WITH Classpath-exception-2.0"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("components (-want +got):\n%s", d)
	}
	got, err = sbom.ParseCycloneDX(read(t, "cyclonedx/license-id-1.5.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].License != "Apache-2.0" {
		t.Errorf("1.5 licence by id: got %+v", got)
	}
	// A licence known only by name is no SPDX expression: unknown.
	got, err = sbom.ParseCycloneDX(read(t, "cyclonedx/valid-license-name.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].License != "" {
		t.Errorf("licence by name: got %+v", got)
	}
	// Every real example parses.
	files, _ := filepath.Glob("testdata/cyclonedx/*.json")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if _, err := sbom.ParseCycloneDX(b); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestParseCycloneDXNestedAndMultipleLicences(t *testing.T) {
	doc := `{"bomFormat":"CycloneDX","specVersion":"1.6","components":[
	  {"type":"library","name":"a","version":"1","purl":"pkg:golang/a@1",
	   "licenses":[{"license":{"id":"MIT"}},{"expression":"Apache-2.0 OR BSD-3-Clause"}],
	   "components":[{"type":"library","name":"b","purl":"pkg:golang/b@2","version":"2"}]},
	  {"type":"library","name":"c"}]}`
	got, err := sbom.ParseCycloneDX([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := []sbom.Component{
		{PURL: "pkg:golang/a@1", Name: "a", Version: "1", License: "MIT AND (Apache-2.0 OR BSD-3-Clause)"},
		{PURL: "pkg:golang/b@2", Name: "b", Version: "2"},
		{Name: "c"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("components (-want +got):\n%s", d)
	}
}

func TestParseSPDXExample(t *testing.T) {
	got, err := sbom.ParseSPDX(read(t, "spdx/SPDXJSONExample-v2.3.spdx.json"))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]sbom.Component{}
	for _, c := range got {
		byName[c.Name] = c
	}
	if c := byName["glibc"]; c.Version != "2.11.1" || c.License != "(LGPL-2.0-only OR LicenseRef-3)" {
		t.Errorf("glibc: %+v (want the licence concluded)", c)
	}
	if c := byName["Jena"]; c.PURL != "pkg:maven/org.apache.jena/apache-jena@3.12.0" || c.License != "" {
		t.Errorf("Jena: %+v (want its purl, NOASSERTION as unknown)", c)
	}
	if c := byName["Saxon"]; c.License != "MPL-1.0" {
		t.Errorf("Saxon: %+v", c)
	}
}

func nestedCycloneDX(depth, width int) []byte {
	var b strings.Builder
	b.WriteString(`{"bomFormat":"CycloneDX","specVersion":"1.6","components":[`)
	var comp func(d int)
	comp = func(d int) {
		fmt.Fprintf(&b, `{"type":"library","name":"n%d","version":"1.0.%d","purl":"pkg:golang/example.com/n%d@1.0.%d","licenses":[{"license":{"id":"MIT"}}]`, d, d, d, d)
		if d < depth {
			b.WriteString(`,"components":[`)
			for i := 0; i < width; i++ {
				if i > 0 {
					b.WriteByte(',')
				}
				comp(d + 1)
			}
			b.WriteString(`]`)
		}
		b.WriteString(`}`)
	}
	comp(1)
	b.WriteString(`]}`)
	return []byte(b.String())
}

func TestRefusals(t *testing.T) {
	many := `{"bomFormat":"CycloneDX","specVersion":"1.6","components":[` +
		strings.Repeat(`{"type":"library","name":"x"},`, sbom.MaxComponents) + `{"type":"library","name":"x"}]}`
	spdxMany := `{"spdxVersion":"SPDX-2.3","packages":[` + strings.Repeat(`{"name":"x"},`, sbom.MaxComponents) + `{"name":"x"}]}`
	cases := []struct {
		name  string
		parse func([]byte) ([]sbom.Component, error)
		doc   string
	}{
		{"cdx too large", sbom.ParseCycloneDX, `{"bomFormat":"CycloneDX","specVersion":"1.6","x":"` + strings.Repeat("a", sbom.MaxBytes) + `"}`},
		{"cdx not JSON", sbom.ParseCycloneDX, `{"bomFormat":"CycloneDX",`},
		{"cdx empty", sbom.ParseCycloneDX, ``},
		{"cdx old spec", sbom.ParseCycloneDX, `{"bomFormat":"CycloneDX","specVersion":"1.4","components":[]}`},
		{"cdx no format", sbom.ParseCycloneDX, `{"specVersion":"1.6","components":[]}`},
		{"cdx spdx doc", sbom.ParseCycloneDX, string(read(t, "spdx/SPDXJSONExample-v2.3.spdx.json"))},
		{"cdx JSON too deep", sbom.ParseCycloneDX, `{"bomFormat":"CycloneDX","specVersion":"1.6","x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`},
		{"cdx components too deep", sbom.ParseCycloneDX, string(nestedCycloneDX(sbom.MaxComponentDepth+1, 1))},
		{"cdx too many components", sbom.ParseCycloneDX, many},
		{"cdx empty-object bomb", sbom.ParseCycloneDX, `{"bomFormat":"CycloneDX","specVersion":"1.6","components":[` + strings.Repeat(`{},`, sbom.MaxObjects) + `{}]}`},
		{"spdx 2.2", sbom.ParseSPDX, `{"spdxVersion":"SPDX-2.2","packages":[]}`},
		{"spdx cdx doc", sbom.ParseSPDX, string(read(t, "cyclonedx/valid-bom.json"))},
		{"spdx not JSON", sbom.ParseSPDX, `[`},
		{"spdx null package", sbom.ParseSPDX, `{"spdxVersion":"SPDX-2.3","packages":[null]}`},
		{"spdx too many packages", sbom.ParseSPDX, spdxMany},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.parse([]byte(c.doc))
			if err == nil {
				t.Fatalf("accepted, %d components", len(got))
			}
			if !errors.Is(err, sbom.ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("status %v, want InvalidArgument", status.Code(err))
			}
			if len(err.Error()) > 300 {
				t.Errorf("error of %d bytes quotes too much", len(err.Error()))
			}
		})
	}
}

// TestNestingAtTheBound: a document nested exactly MaxComponentDepth deep
// is accepted.
func TestNestingAtTheBound(t *testing.T) {
	got, err := sbom.ParseCycloneDX(nestedCycloneDX(sbom.MaxComponentDepth, 1))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != sbom.MaxComponentDepth {
		t.Errorf("%d components, want %d", len(got), sbom.MaxComponentDepth)
	}
}

// TestMemoryBounded parses the largest documents the bounds let through
// (many nested components near MaxBytes; and near MaxObjects objects) and
// checks what parsing allocates stays bounded. Figures: go test -run
// TestMemoryBounded -v ./sbom/
func TestMemoryBounded(t *testing.T) {
	docs := map[string][]byte{
		// 1+3+9+27+81+243+729+2187+6561 = 9841 components, 9 deep.
		"nested": nestedCycloneDX(9, 3),
		// MaxComponents components with long names, near MaxBytes.
		"large": []byte(`{"bomFormat":"CycloneDX","specVersion":"1.6","components":[` +
			strings.Repeat(`{"type":"library","name":"`+strings.Repeat("n", 360)+`"},`, sbom.MaxComponents-1) +
			`{"type":"library","name":"x"}]}`),
		"objects": []byte(`{"bomFormat":"CycloneDX","specVersion":"1.6","components":[` +
			strings.Repeat(`{"type":"library","name":"x","licenses":[{"license":{"id":"MIT"}}]},`, sbom.MaxComponents-1) +
			`{"type":"library","name":"x"}],"x":[` + strings.Repeat(`{},`, sbom.MaxObjects-3*sbom.MaxComponents-10) + `{}]}`),
	}
	for name, doc := range docs {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		got, err := sbom.ParseCycloneDX(doc)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: %d bytes, %d components, %.1f MiB allocated while parsing", name, len(doc), len(got), float64(alloc)/(1<<20))
		if alloc > 512<<20 {
			t.Errorf("%s: %d MiB allocated", name, alloc>>20)
		}
	}
}
