package vex

import (
	"strings"

	"github.com/package-url/packageurl-go"

	"github.com/custody-dev/custody/libs/advisory"
)

// Entry is one verified VEX document as logged for an artifact: its log
// index and the identity that submitted it.
type Entry struct {
	Index    int64
	Actor    string
	Document *Document
	// LeafSHA256 is the lowercase hex SHA-256 of the entry's leaf.
	LeafSHA256 string
}

// Suppression is an advisory match that a not_affected statement removed.
type Suppression struct {
	Match advisory.Match
	// Index and Actor are those of the entry holding the statement;
	// Statement is its 1-based position in the document.
	Index      int64
	LeafSHA256 string
	Actor      string
	Statement  int
	// Justification and ImpactStatement are the statement's.
	Justification   string
	ImpactStatement string
}

// Apply splits ms, the advisory matches of the artifact with digest
// artifactDigest, into those that stand and those that a not_affected
// statement suppresses. A statement applies to a match when one of its
// products names the artifact (Product.Names), its vulnerability's name or
// one of its aliases is the advisory's id or one of the advisory's aliases,
// and, if that product lists subcomponents, one of them is the matched
// component's package. Of the statements that apply, the last one counts
// (entries in the order given, which callers make log order, then
// document order): a later affected, fixed or under_investigation
// statement takes back an earlier not_affected. entries must be verified
// by the caller: Apply believes them.
func Apply(ms []advisory.Match, artifactDigest string, entries []Entry) (kept []advisory.Match, suppressed []Suppression) {
	for _, m := range ms {
		var last *Suppression
		var lastStatus Status
		for _, e := range entries {
			for i := range e.Document.Statements {
				s := &e.Document.Statements[i]
				if !s.appliesTo(m, artifactDigest) {
					continue
				}
				lastStatus = s.Status
				last = &Suppression{Match: m, Index: e.Index, LeafSHA256: e.LeafSHA256, Actor: e.Actor, Statement: i + 1,
					Justification: s.Justification, ImpactStatement: s.ImpactStatement}
			}
		}
		if last != nil && lastStatus == NotAffected {
			suppressed = append(suppressed, *last)
			continue
		}
		kept = append(kept, m)
	}
	return kept, suppressed
}

func (s *Statement) appliesTo(m advisory.Match, artifactDigest string) bool {
	if !s.names(m) {
		return false
	}
	for _, p := range s.Products {
		if !p.Names(artifactDigest) {
			continue
		}
		if len(p.Subcomponents) == 0 {
			return true
		}
		cp, err := packageurl.FromString(m.Component.PURL)
		if err != nil {
			continue
		}
		for _, c := range p.Subcomponents {
			if sp, ok := c.purl(); ok && samePackage(sp, cp) {
				return true
			}
		}
	}
	return false
}

// names reports whether the statement's vulnerability is m's advisory.
func (s *Statement) names(m advisory.Match) bool {
	ids := append([]string{m.Advisory}, m.Aliases...)
	for _, n := range append([]string{s.Vulnerability.Name}, s.Vulnerability.Aliases...) {
		for _, id := range ids {
			if id != "" && strings.EqualFold(n, id) {
				return true
			}
		}
	}
	return false
}

// samePackage reports whether the subcomponent sub names the component c:
// the same type, namespace and name, the same version if sub gives one,
// and every qualifier sub gives.
func samePackage(sub, c packageurl.PackageURL) bool {
	if !strings.EqualFold(sub.Type, c.Type) || sub.Namespace != c.Namespace || sub.Name != c.Name {
		return false
	}
	if sub.Version != "" && sub.Version != c.Version {
		return false
	}
	have := c.Qualifiers.Map()
	for _, q := range sub.Qualifiers {
		if have[q.Key] != q.Value {
			return false
		}
	}
	return true
}
