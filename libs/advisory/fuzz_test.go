package advisory_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/custody-dev/custody/libs/advisory"
	"github.com/custody-dev/custody/libs/sbom"
)

// probes are components of every ecosystem FromPURL maps, to run the
// matcher over whatever a fuzzed document's ranges say.
var probes = []sbom.Component{
	{PURL: "pkg:npm/lodash@4.17.11"}, {PURL: "pkg:npm/x@2.0.0"}, {PURL: "pkg:golang/golang.org/x/text@v0.3.6"},
	{PURL: "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"}, {PURL: "pkg:pypi/jinja2@2.11.2"}, {PURL: "pkg:pypi/Jinja2@2.11.2"}, {PURL: "pkg:npm/%40scope/x@1.0.0"},
	{PURL: "pkg:deb/debian/lua5.1@5.1.4-5?distro=debian-6.0"}, {PURL: "pkg:cargo/x@1.0.0"}, {PURL: "pkg:gem/x@1.0"},
	{PURL: "pkg:nuget/x@1.0"}, {PURL: "pkg:composer/a/x@1.0"}, {PURL: "pkg:npm/x"},
}

func FuzzParse(f *testing.F) {
	paths, err := filepath.Glob(filepath.Join("testdata", "osv", "*.json"))
	if err != nil || len(paths) == 0 {
		f.Fatalf("no seeds: %v", err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"id":"X-1","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"x"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"last_affected":"1"},{"limit":"3"},{"introduced":"2"}]}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := advisory.Parse(b)
		if err != nil {
			if !errors.Is(err, advisory.ErrInvalid) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
			return
		}
		if !advisory.ValidID(a.ID) || a.Digest == "" {
			t.Fatalf("accepted advisory with id %q, digest %q", a.ID, a.Digest)
		}
		for _, c := range probes {
			if m, ok := a.Affects(c); ok && (m.Advisory != a.ID || m.Reason == "") {
				t.Fatalf("match %+v without advisory or reason", m)
			}
		}
		advisory.NewIndex([]*advisory.Advisory{a}).MatchAll(probes)
		// A component is affected only under a package the advisory names:
		// the catalog finds candidate components by these packages.
		for _, c := range probes {
			if _, ok := a.Affects(c); !ok {
				continue
			}
			p, ok := advisory.FromPURL(c.PURL)
			if !ok || !slices.ContainsFunc(a.Packages(), func(q advisory.Package) bool { return q.Ecosystem == p.Ecosystem && q.Name == p.Name }) {
				t.Fatalf("component %s affected, but its package %+v is not among %+v", c.PURL, p, a.Packages())
			}
		}
	})
}

func FuzzReadZip(f *testing.F) {
	f.Add(zipOf(f, testdataFiles(f)))
	f.Add(zipOf(f, [][2]string{{"X-1.json#stored", `{"id":"X-1","modified":"2024-01-01T00:00:00Z"}`}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		seen := map[string]bool{}
		err := advisory.ReadZip(bytesReader(b), int64(len(b)), func(a *advisory.Advisory) error {
			if seen[a.ID] {
				t.Fatalf("advisory %s handed over twice", a.ID)
			}
			seen[a.ID] = true
			return nil
		})
		if err != nil && !errors.Is(err, advisory.ErrInvalid) {
			t.Fatalf("error %v does not match ErrInvalid", err)
		}
	})
}
