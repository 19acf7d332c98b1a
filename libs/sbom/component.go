// Package sbom holds what Custody knows of an artifact's contents: the
// components an SBOM lists. Parsing CycloneDX and SPDX documents into
// components lives here too; matching components against advisories lives
// in libs/advisory.
package sbom

// Component is one entry of an SBOM, identified by its package URL.
type Component struct {
	// PURL is the component's package URL (pkg:TYPE/NAMESPACE/NAME@VERSION),
	// the key advisories are matched on. Empty when the SBOM gives none.
	PURL string `json:"purl,omitempty"`
	// Name and Version as the SBOM states them.
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	// License is the component's SPDX licence expression ("" when the SBOM
	// states none: the policy's rule for unknown licences applies).
	License string `json:"license,omitempty"`
}
