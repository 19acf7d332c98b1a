package admission

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/services/gatekeeper/internal/policy"
)

// Denial is one advisory that makes the admission policy deny an artifact
// in an environment.
type Denial struct {
	Advisory string
	// Severity is the highest severity of the advisory's matches.
	Severity string
	// Components are the affected components' purls (or name@version).
	Components []string
	// Reasons are the policy's deny reasons that this advisory causes.
	Reasons []string
	// DryRun is set when the environment is in dry-run (Config.DryRun):
	// the denial is real but admissions there are allowed with a warning.
	DryRun bool
}

// severityRank orders policy severities, UNKNOWN lowest.
var severityRank = map[string]int{"UNKNOWN": 0, "NONE": 1, "LOW": 2, "MEDIUM": 3, "HIGH": 4, "CRITICAL": 5}

// AdvisoryDenials evaluates the artifact req names for req.Environment as
// Admit would, with the same verification, verified SBOM, advisory
// matching (Config.Advisories) and policy, and returns the advisories that
// make the policy deny it there, sorted by id. Nothing is signed or
// logged, and stops are not consulted: a stop is not an advisory.
//
// An advisory denies if some deny reason of the policy evaluated with
// every vulnerability disappears when that advisory's vulnerabilities are
// left out: the per-environment thresholds stay the policy's, in one
// place. An artifact that is not in the catalog, whose evidence no longer
// verifies, or that has no SBOM has no denials (other rules refuse it).
// Errors wrap ErrInvalid, or ErrUnavailable when a dependency failed or
// the advisories could not all be read: the caller must retry rather than
// conclude nothing is affected.
func (g *Gate) AdvisoryDenials(ctx context.Context, req Request) ([]Denial, error) {
	if err := validate(req); err != nil {
		return nil, err
	}
	if g.cfg.SBOMs == nil || g.cfg.Advisories == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	ev, err := g.cfg.Catalog.Evidence(ctx, req.Name, req.Version, req.Digest)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("%w: get %s from the catalog: %w", ErrUnavailable, describe(req), err)
	}
	a := ev.Artifact
	if !digest.Valid(a.Digest) {
		return nil, nil
	}
	ver, _, err := g.verify(ctx, req, ev)
	if err != nil || !ver.Passed() {
		return nil, err
	}
	sb, _, sbomDenial, err := g.readSBOM(ctx, a)
	if err != nil || sbomDenial != "" || !sb.Attached {
		return nil, err
	}
	read, err := g.readAdvisories(ctx, a, sb.Components)
	if err != nil {
		return nil, err
	}
	// A match a verified not_affected VEX suppresses raises no finding.
	vulns, advDenial := read.vulns, read.denial
	if advDenial != "" {
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, advDenial)
	}
	if len(vulns) == 0 {
		return nil, nil
	}
	in := policy.Input{
		Artifact: policy.Artifact{
			Name: a.Name, Version: a.Version, Digest: a.Digest, Size: a.Size, Channel: a.Channel,
			BuilderID: a.BuilderID, SourceRepo: a.SourceRepo, SourceCommit: a.SourceCommit, CreatedAt: ev.CreatedAt,
		},
		Environment:  req.Environment,
		Verification: ver,
		TrustDomain:  g.cfg.TrustDomain,
	}
	in.SBOM = sb
	in.SBOM.Vulnerabilities = vulns
	pol := g.policy.Load()
	all, _, err := pol.Decide(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("%w: evaluate %s for %s: %w", ErrUnavailable, pol.Name(), req.Environment, err)
	}
	byID := map[string][]policy.Vulnerability{}
	for _, v := range vulns {
		byID[v.Advisory] = append(byID[v.Advisory], v)
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var out []Denial
	for _, id := range ids {
		in.SBOM.Vulnerabilities = slices.DeleteFunc(slices.Clone(vulns), func(v policy.Vulnerability) bool { return v.Advisory == id })
		without, _, err := pol.Decide(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("%w: evaluate %s for %s: %w", ErrUnavailable, pol.Name(), req.Environment, err)
		}
		var caused []string
		for _, r := range all {
			if !slices.Contains(without, r) {
				caused = append(caused, r)
			}
		}
		if len(caused) == 0 {
			continue
		}
		d := Denial{Advisory: id, Reasons: caused, DryRun: slices.Contains(g.cfg.DryRun, req.Environment)}
		for _, v := range byID[id] {
			if d.Severity == "" || severityRank[v.Severity] > severityRank[d.Severity] {
				d.Severity = v.Severity
			}
			if !slices.Contains(d.Components, v.Component) {
				d.Components = append(d.Components, v.Component)
			}
		}
		out = append(out, d)
	}
	return out, nil
}
