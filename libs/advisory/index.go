package advisory

import (
	"slices"
	"strings"

	packageurl "github.com/package-url/packageurl-go"

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

// PURLPrefix returns how a package URL of p begins when written in the
// canonical form (packageurl-go's): "pkg:npm/lodash", "pkg:golang/golang.org/x/text",
// "pkg:maven/org.apache.logging.log4j/log4j-core". Every purl that
// FromPURL maps to p and that is written canonically starts with it (other
// packages' purls may too: "pkg:npm/lodash-es"; match to be sure). ok is
// false for an ecosystem FromPURL does not map.
func (p Package) PURLPrefix() (prefix string, ok bool) {
	var u packageurl.PackageURL
	switch p.Ecosystem {
	case "Go":
		u.Type = packageurl.TypeGolang
		if i := strings.LastIndex(p.Name, "/"); i > 0 {
			u.Namespace, u.Name = p.Name[:i], p.Name[i+1:]
		} else {
			u.Name = p.Name
		}
	case "npm":
		u.Type = packageurl.TypeNPM
		if ns, n, found := strings.Cut(p.Name, "/"); found && strings.HasPrefix(ns, "@") {
			u.Namespace, u.Name = ns, n
		} else {
			u.Name = p.Name
		}
	case "PyPI":
		u.Type, u.Name = packageurl.TypePyPi, p.Name
	case "Maven":
		g, a, found := strings.Cut(p.Name, ":")
		if !found {
			return "", false
		}
		u.Type, u.Namespace, u.Name = packageurl.TypeMaven, g, a
	case "Debian", "Ubuntu":
		u.Type, u.Namespace, u.Name = packageurl.TypeDebian, strings.ToLower(p.Ecosystem), p.Name
	case "crates.io":
		u.Type, u.Name = packageurl.TypeCargo, p.Name
	case "RubyGems":
		u.Type, u.Name = packageurl.TypeGem, p.Name
	case "NuGet":
		u.Type, u.Name = packageurl.TypeNuget, p.Name
	case "Packagist":
		ns, n, found := strings.Cut(p.Name, "/")
		if !found {
			return "", false
		}
		u.Type, u.Namespace, u.Name = packageurl.TypeComposer, ns, n
	default:
		return "", false
	}
	if u.Name == "" {
		return "", false
	}
	return u.ToString(), true
}
