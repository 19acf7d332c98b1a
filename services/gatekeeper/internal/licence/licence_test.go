package licence

import (
	"slices"
	"strings"
	"testing"
)

// prod is a typical production rule: copyleft denied, a permissive allow
// list, one custom licence allowed.
var prod = Rule{
	Allow: []string{"MIT", "Apache-2.0", "BSD-3-Clause", "ISC", "GPL-2.0-only WITH Classpath-exception-2.0", "LicenseRef-acme-internal"},
	Deny:  []string{"GPL-2.0-only", "GPL-3.0-only", "GPL-3.0-or-later", "AGPL-3.0-only"},
}

// open allows everything but AGPL.
var open = Rule{Deny: []string{"AGPL-3.0-only"}}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		expr     string
		rule     Rule
		want     Verdict
		licences []string
	}{
		{"MIT", prod, Allowed, nil},
		{"mit", prod, Allowed, nil},
		{"GPL-3.0-only", prod, Denied, []string{"GPL-3.0-only"}},
		{"GPL-3.0-only", open, Allowed, nil},
		{"GPL-3.0", prod, Denied, []string{"GPL-3.0"}}, // deprecated id, same licence
		// OR: either side acceptable passes; both unacceptable fails.
		{"MIT OR GPL-3.0-only", prod, Allowed, nil},
		{"GPL-3.0-only OR MIT", prod, Allowed, nil},
		{"GPL-3.0-only OR AGPL-3.0-only", prod, Denied, []string{"AGPL-3.0-only", "GPL-3.0-only"}},
		{"LGPL-2.1-only OR GPL-3.0-only", prod, NotAllowed, []string{"LGPL-2.1-only"}},
		// AND: both sides needed.
		{"MIT AND Apache-2.0", prod, Allowed, nil},
		{"MIT AND GPL-3.0-only", prod, Denied, []string{"GPL-3.0-only"}},
		{"MIT AND LGPL-2.1-only", prod, NotAllowed, []string{"LGPL-2.1-only"}},
		{"MIT AND (Apache-2.0 OR GPL-3.0-only)", prod, Allowed, nil},
		{"(MIT OR GPL-3.0-only) AND (LGPL-2.1-only OR AGPL-3.0-only)", prod, NotAllowed, []string{"LGPL-2.1-only"}},
		// WITH: an exception is its own licence; allowing a licence allows
		// it with an exception, denying the bare licence does not deny the
		// exception form.
		{"GPL-2.0-only WITH Classpath-exception-2.0", prod, Allowed, nil},
		{"GPL-2.0-only", prod, Denied, []string{"GPL-2.0-only"}},
		{"Apache-2.0 WITH LLVM-exception", prod, Allowed, nil},
		{"GPL-2.0-only WITH Classpath-exception-2.0", Rule{Deny: []string{"GPL-2.0-only WITH Classpath-exception-2.0"}}, Denied, []string{"GPL-2.0-only WITH Classpath-exception-2.0"}},
		// Ranges: a deny of GPL-3.0-or-later catches GPL-2.0-or-later
		// (which may be read as 3.0).
		{"GPL-2.0-or-later", prod, Denied, []string{"GPL-2.0-or-later"}},
		{"GPL-2.0+", prod, Denied, []string{"GPL-2.0-or-later"}}, // normalised,
		{"LGPL-2.1-only", Rule{Deny: []string{"GPL-2.0-or-later"}}, Allowed, nil},
		// Unknown: missing, NOASSERTION, unparseable, not on the SPDX list,
		// a LicenseRef no list names, too long.
		{"", prod, Unknown, nil},
		{"  ", open, Unknown, nil},
		{"NOASSERTION", prod, Unknown, nil},
		{"NONE", open, Unknown, nil},
		{"GPL", prod, Unknown, nil},
		{"MIT AND", prod, Unknown, nil},
		{"(MIT", prod, Unknown, nil},
		{"LicenseRef-acme-internal", prod, Allowed, nil},
		{"LicenseRef-other", prod, Unknown, []string{"LicenseRef-other"}},
		{"LicenseRef-other", open, Unknown, []string{"LicenseRef-other"}},
		{"MIT OR LicenseRef-other", prod, Allowed, nil},
		{"GPL-3.0-only OR LicenseRef-other", prod, Unknown, []string{"LicenseRef-other"}},
		{"MIT AND LicenseRef-other", open, Unknown, []string{"LicenseRef-other"}},
		{strings.Repeat("MIT OR ", 200) + "MIT", prod, Unknown, nil},
	} {
		got := Check(tc.expr, tc.rule)
		if got.Verdict != tc.want || !slices.Equal(got.Licences, tc.licences) {
			t.Errorf("Check(%q) = %+v, want %s %q", tc.expr, got, tc.want, tc.licences)
		}
		if got.Verdict == Unknown && got.Problem == "" {
			t.Errorf("Check(%q): unknown without a problem", tc.expr)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := prod.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, r := range []Rule{
		{Allow: []string{"MIT OR Apache-2.0"}},
		{Deny: []string{"GPL"}},
		{Deny: []string{""}},
		{Allow: make([]string, MaxListLen+1)},
	} {
		if err := r.Validate(); err == nil {
			t.Errorf("Validate(%q) passed", r)
		}
	}
}

// FuzzCheck: whatever expression an SBOM carries, Check returns one of the
// four verdicts without panicking, and an allowed expression parses.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{"MIT", "MIT OR GPL-3.0-only", "(MIT AND Apache-2.0) OR GPL-2.0+", "GPL-2.0-only WITH Classpath-exception-2.0",
		"LicenseRef-x", "DocumentRef-a:LicenseRef-b", "NOASSERTION", "((((", "MIT AND", "Apache-2.0+ WITH LLVM-exception"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		for _, r := range []Rule{prod, open, {}} {
			got := Check(expr, r)
			switch got.Verdict {
			case Allowed, Denied, NotAllowed, Unknown:
			default:
				t.Fatalf("Check(%q) = %q", expr, got.Verdict)
			}
			if got.Verdict == Denied && len(got.Licences) == 0 {
				t.Fatalf("Check(%q): denied naming no licence", expr)
			}
		}
	})
}
