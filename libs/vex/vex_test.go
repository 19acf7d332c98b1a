package vex_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/libs/advisory"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/libs/vex"
)

const (
	app   = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	other = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func sample(t testing.TB) []byte {
	b, err := os.ReadFile("testdata/not-affected.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// doc builds a one-statement document from JSON fragments.
func doc(statement string) []byte {
	return []byte(`{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://x/vex/1","author":"sec","timestamp":"2026-12-03T10:00:00Z","version":1,"statements":[` + statement + `]}`)
}

func TestParse(t *testing.T) {
	d, err := vex.Parse(sample(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Statements) != 1 || d.Statements[0].Status != vex.NotAffected || d.Statements[0].Vulnerability.Aliases[0] != "CVE-2019-10744" {
		t.Errorf("parsed %+v", d)
	}
	if err := d.About(app); err != nil {
		t.Errorf("About(app) = %v", err)
	}
	if err := d.About(other); !errors.Is(err, vex.ErrInvalid) || !strings.Contains(err.Error(), "statement 1") {
		t.Errorf("About(other) = %v, want ErrInvalid naming statement 1", err)
	}
}

func TestParseRefuses(t *testing.T) {
	good := `{"vulnerability":{"name":"GHSA-1"},"products":[{"@id":"` + app + `"}],"status":"not_affected","justification":"component_not_present"}`
	if _, err := vex.Parse(doc(good)); err != nil {
		t.Fatalf("good document refused: %v", err)
	}
	tests := []struct{ name, doc, want string }{
		{"not JSON", `{`, "invalid VEX"},
		{"trailing data", string(doc(good)) + `{}`, "invalid VEX"},
		{"unknown key", strings.Replace(string(doc(good)), `"version":1`, `"version":1,"extra":1`, 1), "extra"},
		{"repeated key", strings.Replace(string(doc(good)), `"version":1`, `"version":1,"version":2`, 1), "version"},
		{"other context", strings.Replace(string(doc(good)), "v0.2.0", "v0.0.1", 1), "@context"},
		{"no id", strings.Replace(string(doc(good)), `"@id":"https://x/vex/1",`, "", 1), "@id is missing"},
		{"no author", strings.Replace(string(doc(good)), `"author":"sec",`, "", 1), "author"},
		{"version 0", strings.Replace(string(doc(good)), `"version":1`, `"version":0`, 1), "version 0"},
		{"no statements", `{"@context":"https://openvex.dev/ns/v0.2.0","@id":"x","author":"a","timestamp":"2026-12-03T10:00:00Z","version":1,"statements":[]}`, "no statements"},
		{"not_affected without justification", string(doc(`{"vulnerability":{"name":"GHSA-1"},"products":[{"@id":"` + app + `"}],"status":"not_affected"}`)), "needs a justification"},
		{"unknown justification", string(doc(`{"vulnerability":{"name":"GHSA-1"},"products":[{"@id":"` + app + `"}],"status":"not_affected","justification":"trust_me"}`)), "trust_me"},
		{"justification on affected", string(doc(`{"vulnerability":{"name":"GHSA-1"},"products":[{"@id":"` + app + `"}],"status":"affected","action_statement":"upgrade","justification":"component_not_present"}`)), "belongs to a not_affected"},
		{"affected without action", string(doc(`{"vulnerability":{"name":"GHSA-1"},"products":[{"@id":"` + app + `"}],"status":"affected"}`)), "action_statement"},
		{"unknown status", string(doc(`{"vulnerability":{"name":"GHSA-1"},"products":[{"@id":"` + app + `"}],"status":"fine"}`)), "status"},
		{"no vulnerability name", string(doc(`{"vulnerability":{},"products":[{"@id":"` + app + `"}],"status":"fixed"}`)), "vulnerability.name"},
		{"no products", string(doc(`{"vulnerability":{"name":"GHSA-1"},"products":[],"status":"fixed"}`)), "no products"},
		{"empty product", string(doc(`{"vulnerability":{"name":"GHSA-1"},"products":[{}],"status":"fixed"}`)), "names nothing"},
		{"unknown identifier", string(doc(`{"vulnerability":{"name":"GHSA-1"},"products":[{"identifiers":{"swid":"x"}}],"status":"fixed"}`)), "swid"},
		{"bad purl", string(doc(`{"vulnerability":{"name":"GHSA-1"},"products":[{"identifiers":{"purl":"pkg:"}}],"status":"fixed"}`)), "purl"},
		{"unknown hash", string(doc(`{"vulnerability":{"name":"GHSA-1"},"products":[{"hashes":{"crc32":"x"}}],"status":"fixed"}`)), "crc32"},
		{"subcomponent not a purl", string(doc(`{"vulnerability":{"name":"GHSA-1"},"products":[{"@id":"` + app + `","subcomponents":[{"@id":"lodash"}]}],"status":"fixed"}`)), "package URL"},
		{"too big", string(doc(good)) + strings.Repeat(" ", vex.MaxDocBytes), "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := vex.Parse([]byte(tt.doc))
			if !errors.Is(err, vex.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse = %v, want ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}

func TestProductNames(t *testing.T) {
	hexd := strings.TrimPrefix(app, "sha256:")
	tests := []struct {
		p    vex.Product
		want bool
	}{
		{vex.Product{ID: app}, true},
		{vex.Product{Hashes: map[string]string{"sha-256": hexd}}, true},
		{vex.Product{ID: "pkg:oci/app@sha256%3A" + hexd}, true},
		{vex.Product{Identifiers: map[string]string{"purl": "pkg:oci/app@sha256:" + hexd + "?repository_url=r.example/app"}}, true},
		{vex.Product{ID: "pkg:generic/app@1.0.0?checksum=sha1:ab,sha256:" + hexd}, true},
		{vex.Product{ID: other}, false},
		{vex.Product{Hashes: map[string]string{"sha-512": hexd}}, false},
		{vex.Product{ID: "pkg:generic/app@1.0.0"}, false},
		{vex.Product{ID: "app@1.0.0"}, false},
	}
	for _, tt := range tests {
		if got := tt.p.Names(app); got != tt.want {
			t.Errorf("%+v Names = %v, want %v", tt.p, got, tt.want)
		}
	}
}

func TestApply(t *testing.T) {
	lodash := sbom.Component{PURL: "pkg:npm/lodash@4.17.11"}
	minimist := sbom.Component{PURL: "pkg:npm/minimist@1.2.0"}
	m := func(id string, c sbom.Component, aliases ...string) advisory.Match {
		return advisory.Match{Advisory: id, Severity: advisory.SeverityHigh, Component: c, Aliases: aliases}
	}
	statement := func(name, status, extra string) string {
		s := `{"vulnerability":{"name":"` + name + `"},"products":[{"@id":"` + app + `"` + extra + `}],"status":"` + status + `"`
		switch status {
		case "not_affected":
			s += `,"justification":"vulnerable_code_not_in_execute_path"`
		case "affected":
			s += `,"action_statement":"upgrade"`
		}
		return s + "}"
	}
	entry := func(index int64, statements ...string) vex.Entry {
		d, err := vex.Parse(doc(strings.Join(statements, ",")))
		if err != nil {
			t.Fatal(err)
		}
		return vex.Entry{Index: index, Actor: "spiffe://custody.test/security/triage", Document: d}
	}
	sampleDoc, err := vex.Parse(sample(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		digest         string
		matches        []advisory.Match
		entries        []vex.Entry
		wantKept       []string
		wantSuppressed []string
	}{
		{"right artifact and advisory", app, []advisory.Match{m("GHSA-1", lodash)},
			[]vex.Entry{entry(7, statement("GHSA-1", "not_affected", ""))}, nil, []string{"GHSA-1@7"}},
		{"another artifact", other, []advisory.Match{m("GHSA-1", lodash)},
			[]vex.Entry{entry(7, statement("GHSA-1", "not_affected", ""))}, []string{"GHSA-1"}, nil},
		{"another advisory", app, []advisory.Match{m("GHSA-2", lodash)},
			[]vex.Entry{entry(7, statement("GHSA-1", "not_affected", ""))}, []string{"GHSA-2"}, nil},
		{"the statement names an alias of the advisory", app, []advisory.Match{m("GHSA-1", lodash, "CVE-2019-1")},
			[]vex.Entry{entry(7, statement("CVE-2019-1", "not_affected", ""))}, nil, []string{"GHSA-1@7"}},
		{"the statement's alias is the advisory id", app, []advisory.Match{m("GHSA-jf85-cpcp-j695", lodash)},
			[]vex.Entry{{Index: 3, Document: &vex.Document{Statements: []vex.Statement{{
				Vulnerability: vex.Vulnerability{Name: "CVE-2019-10744", Aliases: []string{"GHSA-jf85-cpcp-j695"}},
				Products:      []vex.Product{{ID: app}}, Status: vex.NotAffected, Justification: "component_not_present"}}}}},
			nil, []string{"GHSA-jf85-cpcp-j695@3"}},
		{"affected does not suppress", app, []advisory.Match{m("GHSA-1", lodash)},
			[]vex.Entry{entry(7, statement("GHSA-1", "affected", ""))}, []string{"GHSA-1"}, nil},
		{"fixed does not suppress", app, []advisory.Match{m("GHSA-1", lodash)},
			[]vex.Entry{entry(7, statement("GHSA-1", "fixed", ""))}, []string{"GHSA-1"}, nil},
		{"under_investigation does not suppress", app, []advisory.Match{m("GHSA-1", lodash)},
			[]vex.Entry{entry(7, statement("GHSA-1", "under_investigation", ""))}, []string{"GHSA-1"}, nil},
		{"a later affected takes back a not_affected", app, []advisory.Match{m("GHSA-1", lodash)},
			[]vex.Entry{entry(7, statement("GHSA-1", "not_affected", "")), entry(9, statement("GHSA-1", "affected", ""))}, []string{"GHSA-1"}, nil},
		{"a later not_affected replaces an under_investigation", app, []advisory.Match{m("GHSA-1", lodash)},
			[]vex.Entry{entry(7, statement("GHSA-1", "under_investigation", ""), statement("GHSA-1", "not_affected", ""))}, nil, []string{"GHSA-1@7"}},
		{"subcomponent: only the named component", app, []advisory.Match{m("GHSA-1", lodash), m("GHSA-1", minimist)},
			[]vex.Entry{entry(7, statement("GHSA-1", "not_affected", `,"subcomponents":[{"@id":"pkg:npm/lodash"}]`))}, []string{"GHSA-1"}, []string{"GHSA-1@7"}},
		{"subcomponent with another version", app, []advisory.Match{m("GHSA-1", lodash)},
			[]vex.Entry{entry(7, statement("GHSA-1", "not_affected", `,"subcomponents":[{"@id":"pkg:npm/lodash@4.17.12"}]`))}, []string{"GHSA-1"}, nil},
		{"sample document", app, []advisory.Match{m("GHSA-jf85-cpcp-j695", lodash), m("GHSA-jf85-cpcp-j695", minimist)},
			[]vex.Entry{{Index: 5, Document: sampleDoc}}, []string{"GHSA-jf85-cpcp-j695"}, []string{"GHSA-jf85-cpcp-j695@5"}},
		{"no entries", app, []advisory.Match{m("GHSA-1", lodash)}, nil, []string{"GHSA-1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kept, sup := vex.Apply(tt.matches, tt.digest, tt.entries)
			var gotKept, gotSup []string
			for _, k := range kept {
				gotKept = append(gotKept, k.Advisory)
			}
			for _, s := range sup {
				gotSup = append(gotSup, fmt.Sprintf("%s@%d", s.Match.Advisory, s.Index))
			}
			if diff := cmp.Diff(tt.wantKept, gotKept); diff != "" {
				t.Errorf("kept (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantSuppressed, gotSup); diff != "" {
				t.Errorf("suppressed (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(sample(f))
	f.Add(doc(`{"vulnerability":{"name":"GHSA-1","aliases":["CVE-1"]},"products":[{"identifiers":{"purl":"pkg:oci/a@sha256:` + strings.TrimPrefix(app, "sha256:") + `"},"subcomponents":[{"@id":"pkg:npm/x@1"}]}],"status":"not_affected","impact_statement":"x"}`))
	f.Add(doc(`{"vulnerability":{"name":"GHSA-1"},"products":[{"hashes":{"sha-256":"11"}}],"status":"affected","action_statement":"x"}`))
	probes := []advisory.Match{
		{Advisory: "GHSA-1", Component: sbom.Component{PURL: "pkg:npm/x@1"}, Aliases: []string{"CVE-1"}},
		{Advisory: "GHSA-jf85-cpcp-j695", Component: sbom.Component{PURL: "pkg:npm/lodash@4.17.11"}},
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := vex.Parse(b)
		if err != nil {
			if !errors.Is(err, vex.ErrInvalid) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
			return
		}
		if len(d.Statements) == 0 || len(d.Statements) > vex.MaxStatements {
			t.Fatalf("accepted %d statements", len(d.Statements))
		}
		_ = d.About(app)
		kept, sup := vex.Apply(probes, app, []vex.Entry{{Index: 1, Document: d}})
		if len(kept)+len(sup) != len(probes) {
			t.Fatalf("Apply lost matches: %d kept + %d suppressed of %d", len(kept), len(sup), len(probes))
		}
		for _, s := range sup {
			if st := d.Statements[s.Statement-1]; st.Status != vex.NotAffected {
				t.Fatalf("suppressed by a %s statement", st.Status)
			}
		}
	})
}
