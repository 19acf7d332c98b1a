package advisory

import (
	"slices"
	"strings"

	"github.com/custody-dev/custody/libs/sbom"
)

// Index finds the advisories that affect components. It is built once and
// safe for concurrent use afterwards.
type Index struct {
	by map[string][]*Advisory
}

func key(ecosystem, name string) string { return ecosystem + "\x00" + name }

// NewIndex indexes advs by the packages they name. Withdrawn advisories
// are left out.
func NewIndex(advs []*Advisory) *Index {
	ix := &Index{by: make(map[string][]*Advisory)}
	for _, a := range advs {
		if a.Withdrawn {
			continue
		}
		for _, p := range a.Packages() {
			k := key(p.Ecosystem, p.Name)
			ix.by[k] = append(ix.by[k], a)
		}
	}
	return ix
}

// Match returns the advisories that affect c, in id order; none for a
// component whose purl FromPURL cannot map.
func (ix *Index) Match(c sbom.Component) []Match {
	p, ok := FromPURL(c.PURL)
	if !ok {
		return nil
	}
	var out []Match
	for _, a := range ix.by[key(p.Ecosystem, p.Name)] {
		if m, ok := a.affects(p, c); ok {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b Match) int { return strings.Compare(a.Advisory, b.Advisory) })
	return out
}

// MatchAll returns the matches of every component of cs, component by
// component in the order given.
func (ix *Index) MatchAll(cs []sbom.Component) []Match {
	var out []Match
	for _, c := range cs {
		out = append(out, ix.Match(c)...)
	}
	return out
}

// Packages returns the packages a names, each once, in the order of its
// affected entries: ecosystems without their release, names spelled as
// matching compares them. Name and Ecosystem are set; Release and
// Version are not.
func (a *Advisory) Packages() []Package {
	var out []Package
	seen := map[string]bool{}
	for _, af := range a.OSV.GetAffected() {
		eco, _, _ := strings.Cut(af.GetPackage().GetEcosystem(), ":")
		name := normalize(eco, af.GetPackage().GetName())
		if eco == "" || name == "" || seen[key(eco, name)] {
			continue
		}
		seen[key(eco, name)] = true
		out = append(out, Package{Ecosystem: eco, Name: name})
	}
	return out
}
