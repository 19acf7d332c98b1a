package advisory

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/google/osv-scalibr/semantic"
	osv "github.com/ossf/osv-schema/bindings/go/osvschema"
	packageurl "github.com/package-url/packageurl-go"

	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/sbom"
)

// Package is a component as OSV names it: an ecosystem (without a release
// suffix), a package name in that ecosystem's spelling, and for
// distribution packages the release ("12" of "Debian:12"), empty when the
// purl does not say.
type Package struct {
	Ecosystem string
	Name      string
	Release   string
	Version   string
}

// debianReleases maps the codenames a deb purl's distro qualifier may give
// to Debian's release numbers, which OSV's Debian ecosystems carry.
var debianReleases = map[string]string{
	"squeeze": "6.0", "wheezy": "7", "jessie": "8", "stretch": "9", "buster": "10", "bullseye": "11", "bookworm": "12", "trixie": "13", "forky": "14",
}

var pypiSeparators = regexp.MustCompile(`[-_.]+`)

// normalize spells a package name the way its ecosystem compares names:
// PyPI names per PEP 503 (case-folded, runs of -_. as one -), everything
// else exactly.
func normalize(ecosystem, name string) string {
	if ecosystem == "PyPI" {
		return pypiSeparators.ReplaceAllString(strings.ToLower(name), "-")
	}
	return name
}

// FromPURL maps a package URL to the OSV package it names, for the purl
// types whose ecosystems Custody orders versions for: golang (Go), npm,
// pypi (PyPI), maven, deb (Debian for namespace debian, Ubuntu for
// ubuntu), cargo (crates.io), gem (RubyGems), nuget (NuGet) and composer
// (Packagist). ok is false for any other purl, or one that does not parse.
func FromPURL(purl string) (p Package, ok bool) {
	if len(purl) > 4096 {
		return Package{}, false
	}
	u, err := packageurl.FromString(purl)
	if err != nil || u.Name == "" {
		return Package{}, false
	}
	joined := func(sep string) string {
		if u.Namespace == "" {
			return u.Name
		}
		return u.Namespace + sep + u.Name
	}
	p.Version = u.Version
	switch u.Type {
	case packageurl.TypeGolang:
		p.Ecosystem, p.Name = "Go", joined("/")
	case packageurl.TypeNPM:
		p.Ecosystem, p.Name = "npm", joined("/")
	case packageurl.TypePyPi:
		p.Ecosystem, p.Name = "PyPI", u.Name
	case packageurl.TypeMaven:
		if u.Namespace == "" {
			return Package{}, false
		}
		p.Ecosystem, p.Name = "Maven", joined(":")
	case packageurl.TypeCargo:
		p.Ecosystem, p.Name = "crates.io", u.Name
	case packageurl.TypeGem:
		p.Ecosystem, p.Name = "RubyGems", u.Name
	case packageurl.TypeNuget:
		p.Ecosystem, p.Name = "NuGet", u.Name
	case packageurl.TypeComposer:
		p.Ecosystem, p.Name = "Packagist", joined("/")
	case packageurl.TypeDebian:
		switch strings.ToLower(u.Namespace) {
		case "debian":
			p.Ecosystem = "Debian"
		case "ubuntu":
			p.Ecosystem = "Ubuntu"
		default:
			return Package{}, false
		}
		p.Name = u.Name
		distro := strings.ToLower(u.Qualifiers.Map()["distro"])
		distro = strings.TrimPrefix(distro, strings.ToLower(u.Namespace)+"-")
		if r, ok := debianReleases[distro]; ok && p.Ecosystem == "Debian" {
			distro = r
		}
		p.Release = distro
	default:
		return Package{}, false
	}
	p.Name = normalize(p.Ecosystem, p.Name)
	return p, true
}

// Match is one advisory affecting one component.
type Match struct {
	// Advisory is the advisory's id, Severity its severity.
	Advisory string   `json:"advisory"`
	Severity Severity `json:"severity"`
	// Component is the component as the SBOM lists it.
	Component sbom.Component `json:"component"`
	// Reason says why the component's version is affected: the range or
	// listed version that contains it.
	Reason string `json:"reason"`
	// Uncertain is set when the version could not be compared (it does
	// not parse in its ecosystem, or the component states none): such a
	// component is reported as affected rather than passed over.
	Uncertain bool `json:"uncertain,omitempty"`
	// Aliases are the advisory's aliases (other databases' ids for it),
	// which a VEX statement may name instead of its id.
	Aliases []string `json:"aliases,omitempty"`
}

// Affects reports whether a affects the component c and why. A withdrawn
// advisory affects nothing; a component whose purl FromPURL cannot map
// is never affected (its versions cannot be ordered).
func (a *Advisory) Affects(c sbom.Component) (Match, bool) {
	p, ok := FromPURL(c.PURL)
	if !ok || a.Withdrawn {
		return Match{}, false
	}
	return a.affects(p, c)
}

func (a *Advisory) affects(p Package, c sbom.Component) (Match, bool) {
	m := Match{Advisory: a.ID, Severity: a.Severity, Component: c, Aliases: a.OSV.GetAliases()}
	for _, af := range a.OSV.GetAffected() {
		eco, release, _ := strings.Cut(af.GetPackage().GetEcosystem(), ":")
		if eco != p.Ecosystem || normalize(eco, af.GetPackage().GetName()) != p.Name {
			continue
		}
		if release != "" && p.Release != "" && release != p.Release {
			continue
		}
		if reason, uncertain, hit := affectedBy(af, eco, p.Version); hit {
			m.Reason, m.Uncertain = reason, uncertain
			return m, true
		}
	}
	return Match{}, false
}

// affectedBy evaluates one affected entry for version (in ecosystem eco):
// its explicit versions first, then its SEMVER and ECOSYSTEM ranges (GIT
// ranges name commits, which an SBOM does not give).
func affectedBy(af *osv.Affected, eco, version string) (reason string, uncertain, hit bool) {
	if version == "" {
		return "the component states no version", true, true
	}
	if len(version) > MaxVersionLen {
		return fmt.Sprintf("version %q is too long to compare", quote.Prefix(version)), true, true
	}
	v, verr := semantic.Parse(version, eco)
	for _, listed := range af.GetVersions() {
		if listed == version || (verr == nil && equal(v, listed)) {
			return fmt.Sprintf("version %s is listed as affected", version), false, true
		}
	}
	for _, r := range af.GetRanges() {
		var (
			rv    semantic.Version
			err   error
			parse func(string) (semantic.Version, error)
		)
		switch r.GetType() {
		case osv.Range_SEMVER:
			parse = func(s string) (semantic.Version, error) { return semantic.ParseSemverVersion(s), nil }
			rv = semantic.ParseSemverVersion(version)
		case osv.Range_ECOSYSTEM:
			parse = func(s string) (semantic.Version, error) { return semantic.Parse(s, eco) }
			rv, err = v, verr
		default:
			continue
		}
		if err != nil {
			return fmt.Sprintf("version %q does not parse as a %s version: %v", quote.Prefix(version), eco, err), true, true
		}
		in, err := inRange(rv, parse, r.GetEvents())
		if err != nil {
			return fmt.Sprintf("version %s could not be compared with the range %s: %v", version, describe(r), err), true, true
		}
		if in {
			return fmt.Sprintf("version %s is in the %s range %s", version, r.GetType(), describe(r)), false, true
		}
	}
	return "", false, false
}

// equal reports whether listed parses to the same version as v.
func equal(v semantic.Version, listed string) bool {
	c, err := v.CompareStr(listed)
	return err == nil && c == 0
}

// event is one range event, its kind and version.
type event struct {
	kind, version string
}

func eventOf(e *osv.Event) event {
	switch {
	case e.GetIntroduced() != "":
		return event{"introduced", e.GetIntroduced()}
	case e.GetFixed() != "":
		return event{"fixed", e.GetFixed()}
	case e.GetLastAffected() != "":
		return event{"last_affected", e.GetLastAffected()}
	case e.GetLimit() != "":
		return event{"limit", e.GetLimit()}
	}
	return event{}
}

// kindOrder breaks ties between events of the same version: a version
// introduced and fixed at once is not affected.
var kindOrder = map[string]int{"introduced": 0, "last_affected": 1, "fixed": 2, "limit": 3}

// inRange evaluates OSV's range algorithm for v, whose ordering parse
// gives: with the events in version order ("introduced: 0" first), v is
// affected after an introduced at or below it, until a fixed at or below
// it or a last_affected below it; a version at or above every limit is not
// affected. Walking the sorted events, the state is set by the last event
// whose condition holds, so it is enough to find that event: the greatest
// (by version, then introduced < last_affected < fixed) of those that
// apply. An event whose version does not parse is an error.
func inRange(v semantic.Version, parse func(string) (semantic.Version, error), evs []*osv.Event) (bool, error) {
	var (
		last    *event
		lastVer semantic.Version
		limits  []string
	)
	for _, e := range evs {
		ev := eventOf(e)
		switch ev.kind {
		case "":
			continue
		case "limit":
			limits = append(limits, ev.version)
			continue
		}
		zero := ev.kind == "introduced" && ev.version == "0"
		var ver semantic.Version
		c := 1 // v is above "introduced: 0"
		if !zero {
			var err error
			if ver, err = parse(ev.version); err != nil {
				return false, fmt.Errorf("%s %q: %w", ev.kind, quote.Prefix(ev.version), err)
			}
			if c, err = v.Compare(ver); err != nil {
				return false, fmt.Errorf("%s %q: %w", ev.kind, quote.Prefix(ev.version), err)
			}
		}
		applies := c > 0 || (c == 0 && ev.kind != "last_affected")
		if !applies {
			continue
		}
		if last != nil {
			later, err := after(ev, ver, zero, *last, lastVer)
			if err != nil {
				return false, err
			}
			if !later {
				continue
			}
		}
		last, lastVer = &ev, ver
	}
	if last == nil || last.kind != "introduced" {
		return false, nil
	}
	if len(limits) == 0 {
		return true, nil
	}
	for _, l := range limits {
		lv, err := parse(l)
		if err != nil {
			return false, fmt.Errorf("limit %q: %w", quote.Prefix(l), err)
		}
		if c, err := v.Compare(lv); err == nil && c < 0 {
			return true, nil
		}
	}
	return false, nil
}

// after reports whether event e (version ver, or "introduced: 0" when
// zero) sorts after event p (version pv; nil for "introduced: 0").
func after(e event, ver semantic.Version, zero bool, p event, pv semantic.Version) (bool, error) {
	switch {
	case zero:
		return pv == nil && kindOrder[e.kind] > kindOrder[p.kind], nil
	case pv == nil:
		return true, nil
	}
	c, err := ver.Compare(pv)
	if err != nil {
		return false, fmt.Errorf("%s %q: %w", e.kind, quote.Prefix(e.version), err)
	}
	return c > 0 || (c == 0 && kindOrder[e.kind] > kindOrder[p.kind]), nil
}

// describe renders a range's events for a reason: "introduced 0, fixed
// 4.17.12".
func describe(r *osv.Range) string {
	var parts []string
	for _, e := range r.GetEvents() {
		if ev := eventOf(e); ev.kind != "" {
			parts = append(parts, ev.kind+" "+quote.Prefix(ev.version))
		}
		if len(parts) == 8 {
			parts = append(parts, "…")
			break
		}
	}
	return "(" + strings.Join(parts, ", ") + ")"
}
