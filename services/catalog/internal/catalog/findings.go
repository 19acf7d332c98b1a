package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/custody-dev/custody/libs/advisory"
)

// Bounds of a findings query: what one call reads from the store.
const (
	// MaxFindingAdvisories bounds the advisories read for one artifact.
	MaxFindingAdvisories = 5000
	// MaxAffectedComponents bounds the SBOM components read for one
	// advisory, over every package it names.
	MaxAffectedComponents = 10000
)

// Finding is one advisory affecting one component of a logged artifact.
type Finding struct {
	Artifact Artifact
	Match    advisory.Match
}

// Findings is the answer of a findings query. Truncated says a bound was
// reached: there may be more findings than listed.
type Findings struct {
	Findings  []Finding
	Truncated bool
}

// FindingsOfArtifact returns the stored advisories that affect the
// components of the SBOM attached to the artifact q names (q.WithDocument
// is ignored), matched with libs/advisory, ordered by component then
// advisory id. An artifact without an SBOM is ErrNotFound: no findings is
// not the same as not affected.
func (c *Catalog) FindingsOfArtifact(ctx context.Context, q SBOMQuery) (*Findings, error) {
	q.WithDocument = false
	b, err := c.GetSBOM(ctx, q)
	if err != nil {
		return nil, err
	}
	var pkgs []AdvisoryPackage
	seen := map[AdvisoryPackage]bool{}
	for _, comp := range b.Components {
		if p, ok := advisory.FromPURL(comp.PURL); ok {
			k := AdvisoryPackage{Ecosystem: p.Ecosystem, Name: p.Name}
			if !seen[k] {
				seen[k] = true
				pkgs = append(pkgs, k)
			}
		}
	}
	out := &Findings{}
	if len(pkgs) == 0 {
		return out, nil
	}
	stored, err := c.store.AdvisoriesByPackages(ctx, pkgs, MaxFindingAdvisories+1)
	if err != nil {
		return nil, unavailable("read advisories", err)
	}
	if len(stored) > MaxFindingAdvisories {
		stored, out.Truncated = stored[:MaxFindingAdvisories], true
	}
	advs, err := parseStored(stored)
	if err != nil {
		return nil, err
	}
	for _, m := range advisory.NewIndex(advs).MatchAll(b.Components) {
		out.Findings = append(out.Findings, Finding{Artifact: b.Artifact, Match: m})
	}
	return out, nil
}

// ArtifactsAffectedBy returns the components of logged artifacts' SBOMs
// that the stored advisory id affects, ordered by artifact then component.
// Candidates are found by each package the advisory names, as the store
// keeps it beside every component (ComponentPackage: every spelling of a
// package's purl, such as another case of a PyPI name or an unescaped npm
// scope, is that one package), then matched with libs/advisory, as
// FindingsOfArtifact matches them.
func (c *Catalog) ArtifactsAffectedBy(ctx context.Context, id string) (*Findings, error) {
	sa, err := c.Advisory(ctx, id)
	if err != nil {
		return nil, err
	}
	advs, err := parseStored([]StoredAdvisory{*sa})
	if err != nil {
		return nil, err
	}
	a := advs[0]
	out := &Findings{}
	budget := MaxAffectedComponents
	for _, p := range a.Packages() {
		cs, err := c.store.ComponentsByPackage(ctx, AdvisoryPackage{Ecosystem: p.Ecosystem, Name: p.Name}, budget+1)
		if err != nil {
			return nil, unavailable("read components", err)
		}
		if len(cs) > budget {
			cs, out.Truncated = cs[:budget], true
		}
		budget -= len(cs)
		for _, ac := range cs {
			if m, ok := a.Affects(ac.Component); ok {
				out.Findings = append(out.Findings, Finding{Artifact: ac.Artifact, Match: m})
			}
		}
		if budget == 0 {
			out.Truncated = true
			break
		}
	}
	slices.SortStableFunc(out.Findings, func(x, y Finding) int {
		if c := strings.Compare(x.Artifact.Name, y.Artifact.Name); c != 0 {
			return c
		}
		return strings.Compare(x.Artifact.Version, y.Artifact.Version)
	})
	return out, nil
}

// parseStored parses stored advisories again; one that no longer parses or
// no longer hashes to its digest is an integrity failure.
func parseStored(stored []StoredAdvisory) ([]*advisory.Advisory, error) {
	out := make([]*advisory.Advisory, 0, len(stored))
	for _, s := range stored {
		a, err := advisory.Parse(s.Document)
		if err == nil && (a.ID != s.ID || a.Digest != s.Digest) {
			err = errors.New("the document is not the one stored under this id")
		}
		if err != nil {
			return nil, fmt.Errorf("%w: stored advisory %s: %v", ErrIntegrity, s.ID, err)
		}
		out = append(out, a)
	}
	return out, nil
}
