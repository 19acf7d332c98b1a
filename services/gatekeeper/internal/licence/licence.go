// Package licence judges a component's SPDX licence expression against an
// environment's allow and deny lists with github.com/github/go-spdx's
// expression parser and satisfier (decision 0092): `A OR B` passes if either
// side is acceptable, `A AND B` needs both, `X WITH E` is its own licence,
// and `+` and -or-later are ranges.
package licence

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/github/go-spdx/v2/spdxexp"

	"github.com/custody-dev/custody/libs/quote"
)

// Verdict is what Check found.
type Verdict string

const (
	// Allowed: some choice the expression offers is all acceptable.
	Allowed Verdict = "allowed"
	// Denied: no choice avoids a licence on the deny list.
	Denied Verdict = "denied"
	// NotAllowed: every choice needs a licence missing from the allow list.
	NotAllowed Verdict = "not_allowed"
	// Unknown: the expression is missing, NOASSERTION/NONE, too long or
	// unparseable, names a licence the SPDX list does not know, or passes
	// only with a LicenseRef that neither list names. The environment's
	// unknown rule decides.
	Unknown Verdict = "unknown"
)

// MaxExpressionLen bounds the expression Check parses; a longer one is
// Unknown. Real expressions are tens of bytes.
const MaxExpressionLen = 1024

// MaxListLen bounds each list of a Rule.
const MaxListLen = 1000

// Rule is one environment's licence lists. Allow empty means every licence
// not denied is acceptable. Deny wins over Allow.
type Rule struct {
	Allow []string
	Deny  []string
}

// Result is Check's answer.
type Result struct {
	Verdict Verdict
	// Licences are the licences behind a Denied (those on the deny list),
	// NotAllowed (those missing from the allow list) or Unknown (the
	// LicenseRefs on neither list) verdict, as the library normalises them, sorted.
	Licences []string
	// Problem explains an Unknown verdict that is not about LicenseRefs.
	Problem string
}

// Validate checks that every entry of r's lists is one SPDX licence
// (optionally with + or WITH an exception) the SPDX list knows, or a
// LicenseRef, and that the lists are bounded.
func (r Rule) Validate() error {
	var errs []error
	for what, list := range map[string][]string{"allow": r.Allow, "deny": r.Deny} {
		if len(list) > MaxListLen {
			errs = append(errs, fmt.Errorf("%s list has %d entries, at most %d", what, len(list), MaxListLen))
			continue
		}
		for _, l := range list {
			terms, err := spdxexp.ExtractLicenses(l)
			if err != nil || len(terms) != 1 || len(l) > MaxExpressionLen {
				errs = append(errs, fmt.Errorf("%s list entry %s: want one SPDX licence id (with an optional + or WITH exception), or a LicenseRef", what, quote.Prefix(l)))
			}
		}
	}
	return errors.Join(errs...)
}

// Check judges expr against r. r must be valid (Validate).
func Check(expr string, r Rule) Result {
	expr = strings.TrimSpace(expr)
	switch {
	case expr == "":
		return Result{Verdict: Unknown, Problem: "no licence stated"}
	case len(expr) > MaxExpressionLen:
		return Result{Verdict: Unknown, Problem: fmt.Sprintf("licence expression longer than %d bytes", MaxExpressionLen)}
	case strings.EqualFold(expr, "NOASSERTION") || strings.EqualFold(expr, "NONE"):
		return Result{Verdict: Unknown, Problem: fmt.Sprintf("licence stated as %s", strings.ToUpper(expr))}
	}
	terms, err := spdxexp.ExtractLicenses(expr)
	if err != nil || len(terms) == 0 {
		return Result{Verdict: Unknown, Problem: fmt.Sprintf("licence expression %s does not parse: %v", quote.Prefix(expr), err)}
	}
	// The library's order varies between calls: a decision's reasons must
	// not.
	slices.Sort(terms)
	var accepted, denied, notAllowed, unknown []string
	for _, t := range terms {
		switch {
		case len(r.Deny) > 0 && satisfies(t, r.Deny):
			denied = append(denied, t)
		case len(r.Allow) == 0 && isRef(t):
			// A custom licence is acceptable only if a list names it.
			unknown = append(unknown, t)
		case len(r.Allow) == 0 || satisfies(t, r.Allow) || satisfies(base(t), r.Allow):
			// An exception only adds permissions: allowing the licence
			// allows it with any exception.
			accepted = append(accepted, t)
		case isRef(t):
			unknown = append(unknown, t)
		default:
			notAllowed = append(notAllowed, t)
		}
	}
	if satisfies(expr, accepted) {
		return Result{Verdict: Allowed}
	}
	if len(unknown) > 0 && satisfies(expr, concat(accepted, unknown)) {
		return Result{Verdict: Unknown, Licences: unknown, Problem: "a custom licence neither list names"}
	}
	if len(denied) == 0 || satisfies(expr, concat(accepted, unknown, notAllowed)) {
		return Result{Verdict: NotAllowed, Licences: notAllowed}
	}
	return Result{Verdict: Denied, Licences: denied}
}

// satisfies reports whether the licences of list satisfy expr; an error
// (which ExtractLicenses already ruled out for expr) counts as no.
func satisfies(expr string, list []string) bool {
	if len(list) == 0 {
		return false
	}
	ok, err := spdxexp.Satisfies(expr, list)
	return err == nil && ok
}

// base is term without its WITH exception.
func base(term string) string {
	if i := strings.Index(term, " WITH "); i >= 0 {
		return term[:i]
	}
	return term
}

func isRef(term string) bool { return strings.Contains(term, "LicenseRef-") }

func concat(lists ...[]string) []string { return slices.Concat(lists...) }
