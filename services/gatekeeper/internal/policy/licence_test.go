package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/sbom"
	defaultpolicy "github.com/custody-dev/custody/services/gatekeeper/policy"
)

// TestLicenceRulesAtScale: the default policy over an SBOM of the most
// components libs/sbom accepts, 100 distinct expressions, ten GPL ones:
// every GPL component is a reason, and one evaluation stays well under
// the admission timeout (the figure is logged).
func TestLicenceRulesAtScale(t *testing.T) {
	p := defaultPolicy(t)
	in := good()
	in.Artifact.Channel, in.Environment = "prod", "prod"
	in.SBOM.Attached = true
	for i := range sbom.MaxComponents {
		lic := fmt.Sprintf("MIT OR LicenseRef-x%d", i%90)
		if i%1000 == 0 {
			lic = fmt.Sprintf("GPL-3.0-only AND LicenseRef-y%d", i/1000)
		}
		in.SBOM.Components = append(in.SBOM.Components, sbom.Component{PURL: fmt.Sprintf("pkg:npm/c%d@1.0.0", i), Name: "c", Version: "1.0.0", License: lic})
	}
	start := time.Now()
	deny, warn, err := p.Decide(t.Context(), in)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d components, %d distinct expressions: %v, %d denies, %d warnings", len(in.SBOM.Components), 100, took, len(deny), len(warn))
	if len(deny) != sbom.MaxComponents/1000 || len(warn) != 0 || !strings.Contains(deny[0], "denied in prod (deny list: GPL-3.0-only)") {
		t.Errorf("denies %d %q, warnings %q", len(deny), deny[:min(len(deny), 2)], warn)
	}
	if took > 5*time.Second {
		t.Errorf("one evaluation took %v", took)
	}
}

// TestLicenceRuleErrorsFailClosed: a list entry that is not an SPDX
// licence makes the evaluation fail (ErrPolicy), so the gatekeeper denies.
func TestLicenceRuleErrorsFailClosed(t *testing.T) {
	src := strings.Replace(string(defaultpolicy.Default()), `"prod": {"allow": [], "deny": copyleft`, `"prod": {"allow": ["MIT OR GPL-3.0-only"], "deny": copyleft`, 1)
	p, err := New(t.Context(), "bad.rego", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	in := good()
	in.Artifact.Channel, in.Environment = "prod", "prod"
	in.SBOM = SBOM{Attached: true, Components: []sbom.Component{{Name: "c", License: "MIT"}}}
	if _, _, err := p.Decide(t.Context(), in); !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), "allow list entry") {
		t.Fatalf("a bad allow entry: %v, want ErrPolicy naming it", err)
	}
}

// TestLicenceBuiltin: custody.licence judges one expression for a policy
// that writes its own rules.
func TestLicenceBuiltin(t *testing.T) {
	src := `package custody.admission

deny contains msg if {
	some c in input.sbom.components
	r := custody.licence(c.license, {"allow": ["MIT"], "deny": ["GPL-3.0-only"]})
	r.verdict != "allowed"
	msg := sprintf("%s %s %v", [c.name, r.verdict, r.licences])
}
`
	p, err := New(t.Context(), "own.rego", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	in := good()
	in.SBOM = SBOM{Attached: true, Components: []sbom.Component{{Name: "a", License: "MIT"}, {Name: "b", License: "GPL-3.0-only OR ISC"}, {Name: "c", License: "NOASSERTION"}}}
	deny, err := p.Evaluate(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	// b could pass under ISC, which the allow list lacks: not allowed, not
	// denied.
	want := []string{`b not_allowed ["ISC"]`, `c unknown []`}
	if !slices.Equal(deny, want) {
		t.Errorf("deny %q, want %q", deny, want)
	}
}
