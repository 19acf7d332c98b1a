package attest

import (
	"fmt"

	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/strictjson"
)

// SBOMPredicateType is the predicate of an SBOM statement: its one subject
// is the artifact by SHA-256; the predicate names the SBOM document by its
// SHA-256 and format. The document itself is stored beside the statement,
// not inside it: an SBOM may be larger than MaxEnvelopeSize
// (docs/decisions/0075-sbom-statement.md).
const SBOMPredicateType = "https://custody.dev/sbom/v1"

// SBOM formats a statement may name.
const (
	SBOMFormatCycloneDX = "cyclonedx-json"
	SBOMFormatSPDX      = "spdx-json"
)

// SBOMRef is what an SBOM statement says: which document describes which
// artifact.
type SBOMRef struct {
	// ArtifactName and ArtifactDigest ("sha256:<hex>") are the subject.
	ArtifactName   string
	ArtifactDigest string
	// Format is SBOMFormatCycloneDX or SBOMFormatSPDX.
	Format string
	// DocumentDigest is "sha256:<hex>" of the SBOM document's bytes.
	DocumentDigest string
}

type sbomJSON struct {
	Format   string `json:"format"`
	Document string `json:"document"`
}

func validSBOMFormat(f string) bool { return f == SBOMFormatCycloneDX || f == SBOMFormatSPDX }

// SBOMStatement encodes r as an in-toto Statement v1 to be signed.
func SBOMStatement(r SBOMRef) ([]byte, error) {
	h, err := digest.Parse(r.ArtifactDigest)
	if err != nil {
		return nil, fmt.Errorf("%w: artifact digest: %v", ErrMalformed, err)
	}
	if !digest.Valid(r.DocumentDigest) {
		return nil, fmt.Errorf("%w: SBOM document digest %q", ErrMalformed, quote.Prefix(r.DocumentDigest))
	}
	if !validSBOMFormat(r.Format) {
		return nil, fmt.Errorf("%w: SBOM format %q", ErrMalformed, quote.Prefix(r.Format))
	}
	if r.ArtifactName == "" {
		return nil, fmt.Errorf("%w: SBOM statement needs the artifact's name", ErrMalformed)
	}
	return marshalStatement(r.ArtifactName, h, SBOMPredicateType, sbomJSON{Format: r.Format, Document: r.DocumentDigest})
}

// SBOM reads an SBOM statement back. It fails unless the predicate is
// SBOMPredicateType with exactly one sha256 subject, a known format and a
// valid document digest.
func (s *Statement) SBOM() (*SBOMRef, error) {
	if s.PredicateType != SBOMPredicateType {
		return nil, fmt.Errorf("%w: predicate type %q, want %s", ErrMalformed, quote.Prefix(s.PredicateType), SBOMPredicateType)
	}
	name, d, err := s.single()
	if err != nil {
		return nil, err
	}
	var p sbomJSON
	if err := strictjson.Decode(s.Predicate, MaxEnvelopeSize, &p); err != nil {
		return nil, fmt.Errorf("%w: SBOM predicate: %v", ErrMalformed, err)
	}
	if !validSBOMFormat(p.Format) || !digest.Valid(p.Document) {
		return nil, fmt.Errorf("%w: SBOM predicate needs a known format and a sha256 document digest", ErrMalformed)
	}
	return &SBOMRef{ArtifactName: name, ArtifactDigest: d, Format: p.Format, DocumentDigest: p.Document}, nil
}

// Describes reports whether doc is the document r names, byte for byte.
func (r *SBOMRef) Describes(doc []byte) bool {
	return digest.Of(doc) == r.DocumentDigest
}
