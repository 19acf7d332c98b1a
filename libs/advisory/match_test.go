package advisory_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/custody-dev/custody/libs/advisory"
	"github.com/custody-dev/custody/libs/sbom"
)

// load reads testdata/osv, real OSV entries (testdata/README.md).
func load(t *testing.T) map[string]*advisory.Advisory {
	t.Helper()
	out := map[string]*advisory.Advisory{}
	if err := advisory.Read(filepath.Join("testdata", "osv"), func(a *advisory.Advisory) error {
		out[a.ID] = a
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func parse(t *testing.T, doc string) *advisory.Advisory {
	t.Helper()
	a, err := advisory.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAffects is the one table of matching: real advisories against
// components with tricky versions of each ecosystem, and written ones for
// the range events real entries here do not use.
func TestAffects(t *testing.T) {
	real := load(t)
	written := map[string]*advisory.Advisory{
		"last_affected": parse(t, `{"id":"TEST-1","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"@scope/pkg"},
			"ranges":[{"type":"SEMVER","events":[{"introduced":"1.0.0"},{"last_affected":"1.4.2"}]}]}]}`),
		"limit": parse(t, `{"id":"TEST-2","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"PyPI","name":"some_pkg"},
			"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"limit":"2.0"}]}]}]}`),
		"two branches": parse(t, `{"id":"TEST-3","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"Go","name":"example.com/m"},
			"ranges":[{"type":"SEMVER","events":[{"fixed":"1.2.5"},{"introduced":"1.3.0"},{"introduced":"0"},{"fixed":"1.3.2"}]}]}]}`),
		"introduced and fixed at once": parse(t, `{"id":"TEST-4","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"x"},
			"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"2.0.0"},{"fixed":"2.0.0"}]}]}]}`),
		"withdrawn": parse(t, `{"id":"TEST-5","modified":"2024-01-01T00:00:00Z","withdrawn":"2024-02-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"x"},
			"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]}`),
	}
	pick := func(id string) *advisory.Advisory {
		if a, ok := real[id]; ok {
			return a
		}
		if a, ok := written[id]; ok {
			return a
		}
		t.Fatalf("no advisory %s", id)
		return nil
	}
	tests := []struct {
		advisory, purl string
		want           bool
		uncertain      bool
	}{
		// npm, semver ordering.
		{"GHSA-jf85-cpcp-j695", "pkg:npm/lodash@4.17.11", true, false},
		{"GHSA-jf85-cpcp-j695", "pkg:npm/lodash@4.17.12", false, false},
		{"GHSA-jf85-cpcp-j695", "pkg:npm/lodash@4.17.12-rc.1", true, false}, // a pre-release comes before its release
		{"GHSA-jf85-cpcp-j695", "pkg:npm/lodash@4.17.9", true, false},       // 9 < 12 as numbers, not as text
		{"GHSA-jf85-cpcp-j695", "pkg:npm/lodash@4.17.100", false, false},
		{"GHSA-jf85-cpcp-j695", "pkg:npm/lodash-es@4.17.13", true, false},
		{"GHSA-jf85-cpcp-j695", "pkg:npm/lodash.defaultsdeep@4.6.1", false, false},
		{"GHSA-jf85-cpcp-j695", "pkg:npm/underscore@1.0.0", false, false},
		{"GHSA-jf85-cpcp-j695", "pkg:pypi/lodash@4.17.11", false, false}, // same name, another ecosystem
		// Go: purl versions carry the v, OSV's do not; pseudo-versions.
		{"GO-2021-0113", "pkg:golang/golang.org/x/text@v0.3.6", true, false},
		{"GO-2021-0113", "pkg:golang/golang.org/x/text@v0.3.7", false, false},
		{"GO-2021-0113", "pkg:golang/golang.org/x/text@v0.3.7-0.20210503195748-5c7c50ebbd4f", true, false},
		{"GO-2021-0113", "pkg:golang/golang.org/x/text@v0.3.10", false, false},
		{"GO-2021-0113", "pkg:golang/golang.org/x/text@v0.14.0", false, false},
		{"GO-2021-0113", "pkg:golang/golang.org/x/net@v0.3.6", false, false},
		// Maven: three ranges; qualifiers order before the release.
		{"GHSA-jfh8-c2jp-5v3q", "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1", true, false},
		{"GHSA-jfh8-c2jp-5v3q", "pkg:maven/org.apache.logging.log4j/log4j-core@2.15.0", false, false},
		{"GHSA-jfh8-c2jp-5v3q", "pkg:maven/org.apache.logging.log4j/log4j-core@2.15.0-rc1", true, false},
		{"GHSA-jfh8-c2jp-5v3q", "pkg:maven/org.apache.logging.log4j/log4j-core@2.12.2", false, false},
		{"GHSA-jfh8-c2jp-5v3q", "pkg:maven/org.apache.logging.log4j/log4j-core@2.12.1", true, false},
		{"GHSA-jfh8-c2jp-5v3q", "pkg:maven/org.apache.logging.log4j/log4j-core@2.3.1", false, false},
		{"GHSA-jfh8-c2jp-5v3q", "pkg:maven/org.apache.logging.log4j/log4j-core@2.0-beta9", true, false},
		{"GHSA-jfh8-c2jp-5v3q", "pkg:maven/org.apache.logging.log4j/log4j-api@2.14.1", false, false},
		// PyPI: PEP 440 ordering and name normalization.
		{"PYSEC-2021-66", "pkg:pypi/jinja2@2.11.2", true, false},
		{"PYSEC-2021-66", "pkg:pypi/Jinja2@2.10", true, false},
		{"PYSEC-2021-66", "pkg:pypi/jinja2@2.0.0", true, false}, // equal to the listed 2.0
		{"PYSEC-2021-66", "pkg:pypi/jinja2@2.11.3", false, false},
		{"PYSEC-2021-66", "pkg:pypi/jinja2@2.11.3rc1", true, false},
		{"PYSEC-2021-66", "pkg:pypi/jinja2@2.11.3.post1", false, false},
		{"PYSEC-2021-66", "pkg:pypi/jinja2@3.1.4", false, false},
		{"PYSEC-2021-66", "pkg:pypi/jinja2@not-pep-440", true, false}, // a legacy version: before every PEP 440 one
		{"PYSEC-2021-66", "pkg:pypi/jinja2", true, true},              // no version: cannot be cleared
		{"PYSEC-2018-103", "pkg:pypi/ymlref@0.1.1", true, false},
		{"PYSEC-2018-103", "pkg:pypi/ymlref@9.0", true, false}, // no fix: every version
		// Debian dpkg ordering: epochs, revisions, ~; releases.
		{"DLA-47-1", "pkg:deb/debian/lua5.1@5.1.4-5?arch=amd64&distro=debian-6.0", true, false},
		{"DLA-47-1", "pkg:deb/debian/lua5.1@5.1.4-5%2Bdeb6u1?distro=squeeze", false, false},
		{"DLA-47-1", "pkg:deb/debian/lua5.1@5.1.4-5~bpo1?distro=debian-6.0", true, false},
		{"DLA-47-1", "pkg:deb/debian/lua5.1@1:5.1.4-1?distro=debian-6.0", false, false}, // the epoch wins
		{"DLA-47-1", "pkg:deb/debian/lua5.1@5.1.4-4?distro=debian-7", false, false},     // another release
		{"DLA-47-1", "pkg:deb/debian/lua5.1@5.1.4-4", true, false},                      // release unknown: any
		{"DLA-47-1", "pkg:deb/ubuntu/lua5.1@5.1.4-4", false, false},
		{"DLA-47-1", "pkg:deb/debian/lua5.1@a:b?distro=debian-6.0", true, true}, // not a dpkg version: cannot be cleared
		// Events real entries here do not use.
		{"last_affected", "pkg:npm/%40scope/pkg@1.4.2", true, false},
		{"last_affected", "pkg:npm/%40scope/pkg@1.4.3", false, false},
		{"last_affected", "pkg:npm/%40scope/pkg@0.9.0", false, false},
		{"limit", "pkg:pypi/some-pkg@1.9", true, false},
		{"limit", "pkg:pypi/Some.Pkg@2.0", false, false},
		{"two branches", "pkg:golang/example.com/m@v1.2.4", true, false},
		{"two branches", "pkg:golang/example.com/m@v1.2.5", false, false},
		{"two branches", "pkg:golang/example.com/m@v1.3.1", true, false},
		{"two branches", "pkg:golang/example.com/m@v1.3.2", false, false},
		{"introduced and fixed at once", "pkg:npm/x@2.0.0", false, false},
		{"withdrawn", "pkg:npm/x@1.0.0", false, false},
		// Purls Custody cannot order.
		{"GHSA-jf85-cpcp-j695", "pkg:generic/lodash@4.17.11", false, false},
		{"GHSA-jf85-cpcp-j695", "not a purl", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.advisory+" "+tt.purl, func(t *testing.T) {
			a := pick(tt.advisory)
			c := sbom.Component{PURL: tt.purl, Name: "c"}
			m, got := a.Affects(c)
			if got != tt.want || m.Uncertain != tt.uncertain {
				t.Fatalf("Affects = %v (uncertain %v, %q); want %v (uncertain %v)", got, m.Uncertain, m.Reason, tt.want, tt.uncertain)
			}
			if got && (m.Advisory != a.ID || m.Reason == "" || m.Component != c) {
				t.Errorf("match %+v does not name the advisory, component and reason", m)
			}
			// The index finds the same.
			ms := advisory.NewIndex([]*advisory.Advisory{a}).Match(c)
			if (len(ms) == 1) != tt.want {
				t.Errorf("Index.Match = %v; want a match: %v", ms, tt.want)
			}
		})
	}
}

func TestSeverity(t *testing.T) {
	real := load(t)
	for id, want := range map[string]advisory.Severity{
		"GHSA-jf85-cpcp-j695": advisory.SeverityCritical, // CVSS:3.1 9.1
		"GHSA-jfh8-c2jp-5v3q": advisory.SeverityCritical, // CVSS:3.1 10.0
		"GO-2021-0113":        advisory.SeverityUnknown,
		"PYSEC-2021-66":       advisory.SeverityUnknown,
	} {
		if got := real[id].Severity; got != want {
			t.Errorf("%s: severity %v, want %v", id, got, want)
		}
	}
	for _, tt := range []struct {
		vector string
		score  float64
		want   advisory.Severity
		ok     bool
	}{
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:H/A:H", 9.1, advisory.SeverityCritical, true},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5, advisory.SeverityHigh, true},
		{"CVSS:3.0/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N", 3.1, advisory.SeverityLow, true},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0, advisory.SeverityNone, true},
		{"CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 9.3, advisory.SeverityCritical, true},
		{"CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N", 0, advisory.SeverityNone, true},
		{"CVSS:3.1/AV:X/AC:L", 0, advisory.SeverityUnknown, false},
		{"AV:N/AC:L/Au:N/C:P/I:P/A:P", 0, advisory.SeverityUnknown, false}, // CVSS v2 is not scored
	} {
		score, sev, ok := advisory.ScoreVector(tt.vector)
		if score != tt.score || sev != tt.want || ok != tt.ok {
			t.Errorf("ScoreVector(%s) = %v, %v, %v; want %v, %v, %v", tt.vector, score, sev, ok, tt.score, tt.want, tt.ok)
		}
	}
	// A CVSS v4 vector in an affected entry counts; the highest wins.
	a := parse(t, `{"id":"TEST-6","modified":"2024-01-01T00:00:00Z","severity":[{"type":"CVSS_V3","score":"CVSS:3.0/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N"}],
		"affected":[{"package":{"ecosystem":"npm","name":"x"},"severity":[{"type":"CVSS_V4","score":"CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}]}]}`)
	if a.Severity != advisory.SeverityCritical {
		t.Errorf("severity %v, want CRITICAL from the affected entry's CVSS v4 vector", a.Severity)
	}
	// GitHub's rating when no vector is given.
	a = parse(t, `{"id":"TEST-7","modified":"2024-01-01T00:00:00Z","database_specific":{"severity":"MODERATE"}}`)
	if a.Severity != advisory.SeverityMedium {
		t.Errorf("severity %v, want MEDIUM from database_specific MODERATE", a.Severity)
	}
}

func TestMatchReasonNamesTheRange(t *testing.T) {
	real := load(t)
	m, ok := real["GHSA-jfh8-c2jp-5v3q"].Affects(sbom.Component{PURL: "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"})
	if !ok || !strings.Contains(m.Reason, "introduced 2.13.0, fixed 2.15.0") {
		t.Fatalf("reason %q does not name the range", m.Reason)
	}
}
