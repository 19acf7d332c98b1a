package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/libs/sbom"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

func storedAdvisory(id, dgst, set string, pkgs ...catalog.AdvisoryPackage) catalog.StoredAdvisory {
	return catalog.StoredAdvisory{ID: id, Digest: dgst, Document: []byte(`{"id":"` + id + `","v":"` + dgst + `"}`), Severity: "HIGH",
		Modified: time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC), SetDigest: set, Packages: pkgs}
}

func advisoryImport(set string, count int) *catalog.AdvisoryImport {
	return &catalog.AdvisoryImport{SetDigest: set, Count: count, Added: count, Actor: "spiffe://t/security/osv",
		CreatedAt: created, LogIndex: 7, Leaf: []byte("leaf of " + set)}
}

// advisories: an import stores its advisories and packages in one
// transaction; the same set is refused with nothing written; a changed
// document replaces the stored one and its packages; an unchanged one is
// left with the import that stored it; another store sees it all.
func advisories(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	npm := catalog.AdvisoryPackage{Ecosystem: "npm", Name: "lodash"}
	goPkg := catalog.AdvisoryPackage{Ecosystem: "Go", Name: "golang.org/x/text"}
	if _, err := s.AdvisoryImport(ctx, "sha256:set1"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("AdvisoryImport before any: %v, want ErrNotFound", err)
	}
	if _, err := s.Advisory(ctx, "GHSA-1"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("Advisory before any: %v, want ErrNotFound", err)
	}
	first := []catalog.StoredAdvisory{storedAdvisory("GHSA-1", "sha256:a", "sha256:set1", npm), storedAdvisory("GO-1", "sha256:b", "sha256:set1", goPkg, npm)}
	id1, err := s.ImportAdvisories(ctx, advisoryImport("sha256:set1", 2), first)
	if err != nil || id1 <= 0 {
		t.Fatalf("ImportAdvisories: %d, %v", id1, err)
	}
	got, err := s.Advisory(ctx, "GO-1")
	if err != nil {
		t.Fatal(err)
	}
	want := first[1]
	want.Packages = []catalog.AdvisoryPackage{goPkg, npm}
	if diff := cmp.Diff(&want, got); diff != "" {
		t.Errorf("Advisory GO-1 (-want +got):\n%s", diff)
	}
	imp, err := s.AdvisoryImport(ctx, "sha256:set1")
	if err != nil {
		t.Fatal(err)
	}
	wantImp := advisoryImport("sha256:set1", 2)
	wantImp.ID = id1
	if diff := cmp.Diff(wantImp, imp); diff != "" {
		t.Errorf("AdvisoryImport (-want +got):\n%s", diff)
	}

	// The same set again: refused, and nothing it carries is written.
	again := []catalog.StoredAdvisory{storedAdvisory("GHSA-9", "sha256:z", "sha256:set1")}
	if _, err := s.ImportAdvisories(ctx, advisoryImport("sha256:set1", 1), again); !errors.Is(err, catalog.ErrAlreadyExists) {
		t.Fatalf("same set again: %v, want ErrAlreadyExists", err)
	}
	if _, err := s.Advisory(ctx, "GHSA-9"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("advisory of a refused import: %v, want ErrNotFound", err)
	}

	// Another set: GHSA-1 changed (and names another package), GO-1 not.
	pypi := catalog.AdvisoryPackage{Ecosystem: "PyPI", Name: "jinja2"}
	second := []catalog.StoredAdvisory{storedAdvisory("GHSA-1", "sha256:a2", "sha256:set2", pypi), storedAdvisory("GO-1", "sha256:b", "sha256:set2", goPkg)}
	if _, err := s.ImportAdvisories(ctx, advisoryImport("sha256:set2", 2), second); err != nil {
		t.Fatal(err)
	}
	other := open(t)
	g1, err := other.Advisory(ctx, "GHSA-1")
	if err != nil {
		t.Fatal(err)
	}
	if g1.Digest != "sha256:a2" || g1.SetDigest != "sha256:set2" || !cmp.Equal(g1.Packages, []catalog.AdvisoryPackage{pypi}) {
		t.Errorf("changed GHSA-1: %+v; want the second document with only its package", g1)
	}
	g2, err := other.Advisory(ctx, "GO-1")
	if err != nil {
		t.Fatal(err)
	}
	if g2.SetDigest != "sha256:set1" || len(g2.Packages) != 2 {
		t.Errorf("unchanged GO-1: %+v; want the first import's row as it was", g2)
	}
	digests, err := other.AdvisoryDigests(ctx, []string{"GHSA-1", "GO-1", "NONE-1"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"GHSA-1": "sha256:a2", "GO-1": "sha256:b"}, digests); diff != "" {
		t.Errorf("AdvisoryDigests (-want +got):\n%s", diff)
	}
	// Many ids at once (more than one statement's parameters).
	var many []catalog.StoredAdvisory
	var ids []string
	for i := range 1200 {
		id := fmt.Sprintf("MANY-%d", i)
		many = append(many, storedAdvisory(id, "sha256:m", "sha256:set3"))
		ids = append(ids, id)
	}
	if _, err := s.ImportAdvisories(ctx, advisoryImport("sha256:set3", len(many)), many); err != nil {
		t.Fatal(err)
	}
	if digests, err := s.AdvisoryDigests(ctx, ids); err != nil || len(digests) != len(ids) {
		t.Errorf("AdvisoryDigests of %d ids: %d, %v", len(ids), len(digests), err)
	}
}

// advisoryLookups: advisories by the packages they name, and SBOM
// components of logged artifacts by purl prefix, bytewise, bounded.
func advisoryLookups(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	npm := catalog.AdvisoryPackage{Ecosystem: "npm", Name: "lodash"}
	goPkg := catalog.AdvisoryPackage{Ecosystem: "Go", Name: "golang.org/x/text"}
	pypi := catalog.AdvisoryPackage{Ecosystem: "PyPI", Name: "jinja2"}
	if _, err := s.ImportAdvisories(ctx, advisoryImport("sha256:set1", 3), []catalog.StoredAdvisory{
		storedAdvisory("GHSA-1", "sha256:a", "sha256:set1", npm, goPkg), storedAdvisory("GO-1", "sha256:b", "sha256:set1", goPkg),
		storedAdvisory("PYSEC-1", "sha256:c", "sha256:set1", pypi),
	}); err != nil {
		t.Fatal(err)
	}
	ids := func(as []catalog.StoredAdvisory) []string {
		var out []string
		for _, a := range as {
			out = append(out, a.ID)
		}
		return out
	}
	got, err := s.AdvisoriesByPackages(ctx, []catalog.AdvisoryPackage{goPkg, npm, {Ecosystem: "npm", Name: "none"}}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"GHSA-1", "GO-1"}, ids(got)); diff != "" {
		t.Errorf("AdvisoriesByPackages (-want +got):\n%s", diff)
	}
	if len(got) > 0 && (got[0].Digest != "sha256:a" || string(got[0].Document) == "") {
		t.Errorf("advisory read by package: %+v", got[0])
	}
	if got, err := s.AdvisoriesByPackages(ctx, []catalog.AdvisoryPackage{goPkg, npm, pypi}, 2); err != nil || len(got) != 2 {
		t.Errorf("AdvisoriesByPackages limit 2: %v, %v", ids(got), err)
	}
	// The npm and Go names in another ecosystem match nothing.
	if got, err := s.AdvisoriesByPackages(ctx, []catalog.AdvisoryPackage{{Ecosystem: "PyPI", Name: "lodash"}}, 10); err != nil || len(got) != 0 {
		t.Errorf("lodash in PyPI: %v, %v", ids(got), err)
	}

	a1 := logged(t, s, record("1.0.0", d1), 0)
	b := sbomRow(a1, "doc one", 0)
	b.Components = append(b.Components, sbom.Component{PURL: "pkg:npm/lodash@4.17.11", Name: "lodash", Version: "4.17.11"},
		sbom.Component{PURL: "pkg:npm/lodash-es@4.17.11", Name: "lodash-es"}, sbom.Component{PURL: "pkg:npm/lodasi@1.0.0", Name: "lodasi"},
		// Other spellings of one package: a PyPI name's case and separators
		// (PEP 503), an npm scope's @ escaped or not.
		sbom.Component{PURL: "pkg:pypi/Jinja2@2.11.2", Name: "Jinja2"}, sbom.Component{PURL: "pkg:pypi/jinja2@3.0.0", Name: "jinja2"},
		sbom.Component{PURL: "pkg:pypi/zope.interface@5.0", Name: "zope.interface"},
		sbom.Component{PURL: "pkg:npm/%40scope/pkg@1.0.0", Name: "pkg"}, sbom.Component{PURL: "pkg:npm/@scope/pkg@1.0.1", Name: "pkg"},
		// A purl of no advisory ecosystem, and none at all.
		sbom.Component{PURL: "pkg:generic/lodash@1.0.0", Name: "lodash"}, sbom.Component{Name: "lodash"})
	if _, err := s.InsertSBOM(ctx, b); err != nil {
		t.Fatal(err)
	}
	// A pending artifact's components are not found.
	pid, err := s.InsertArtifact(ctx, record("3.0.0", d2))
	if err != nil {
		t.Fatal(err)
	}
	pb := sbomRow(pid, "doc pending", 0)
	pb.Components = append(pb.Components, sbom.Component{PURL: "pkg:npm/lodash@1.0.0", Name: "lodash"})
	if _, err := s.InsertSBOM(ctx, pb); err != nil {
		t.Fatal(err)
	}
	find := func(s Store, pkg catalog.AdvisoryPackage, limit int) []string {
		t.Helper()
		cs, err := s.ComponentsByPackage(ctx, pkg, limit)
		if err != nil {
			t.Fatal(err)
		}
		var purls []string
		for _, c := range cs {
			purls = append(purls, c.Component.PURL)
			if c.Artifact.Name != "app" || c.Artifact.Version != "1.0.0" || c.Artifact.Digest != d1 {
				t.Errorf("component %s of artifact %+v, want app@1.0.0", c.Component.PURL, c.Artifact)
			}
		}
		return purls
	}
	for _, c := range []struct {
		pkg  catalog.AdvisoryPackage
		want []string
	}{
		{npm, []string{"pkg:npm/lodash@4.17.11"}}, // not lodash-es, not the pending artifact's, not pkg:generic
		{pypi, []string{"pkg:pypi/Jinja2@2.11.2", "pkg:pypi/jinja2@3.0.0"}},
		{catalog.AdvisoryPackage{Ecosystem: "PyPI", Name: "zope-interface"}, []string{"pkg:pypi/zope.interface@5.0"}},
		{catalog.AdvisoryPackage{Ecosystem: "npm", Name: "@scope/pkg"}, []string{"pkg:npm/%40scope/pkg@1.0.0", "pkg:npm/@scope/pkg@1.0.1"}},
		{catalog.AdvisoryPackage{Ecosystem: "PyPI", Name: "lodash"}, nil},
		{catalog.AdvisoryPackage{Ecosystem: "npm", Name: "lodas%"}, nil},
		{catalog.AdvisoryPackage{Ecosystem: "npm", Name: "lodas_"}, nil},
		{catalog.AdvisoryPackage{Ecosystem: "", Name: ""}, nil},
		{catalog.AdvisoryPackage{Ecosystem: "npm", Name: ""}, nil},
	} {
		if diff := cmp.Diff(c.want, find(open(t), c.pkg, 10)); diff != "" {
			t.Errorf("ComponentsByPackage(%+v) (-want +got):\n%s", c.pkg, diff)
		}
	}
	if got := find(s, pypi, 1); len(got) != 1 {
		t.Errorf("limit 1: %v", got)
	}
	// Every stored component's package is the one its purl names.
	for _, c := range b.Components {
		p, ok := catalog.ComponentPackage(c.PURL)
		if !ok {
			continue
		}
		if got := find(s, p, 100); !slices.Contains(got, c.PURL) {
			t.Errorf("component %s not found under its package %+v: %v", c.PURL, p, got)
		}
	}
}
