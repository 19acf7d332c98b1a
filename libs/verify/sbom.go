package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/libs/strictjson"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
)

// SBOMEvidence is an SBOM attestation as the catalog served it: the
// envelope over the SBOM statement, its sbom.attached log entry with an
// inclusion proof, and the document if it was fetched.
type SBOMEvidence struct {
	Envelope []byte
	Entry    LogEntry
	// Document is nil if the caller did not fetch it; then only the
	// statement's document digest is verified, not the bytes.
	Document []byte
}

// sbomEntryDetails are the fields of an sbom.attached entry's details
// that bind it to the attestation (decision 0076).
type sbomEntryDetails struct {
	Name           string `json:"name"`
	Version        string `json:"version"`
	Digest         string `json:"digest"`
	Format         string `json:"format"`
	Document       string `json:"document"`
	Components     int    `json:"components"`
	By             string `json:"by"`
	EnvelopeSHA256 string `json:"envelope_sha256"`
}

// SBOM verifies that ev attests an SBOM of a, an artifact whose evidence
// Check has already verified: the envelope is signed by an artifact key
// of root valid for a's channel when the log recorded the entry (revocation
// as in Options), its statement is an SBOM statement about a's name and
// digest, the entry is an sbom.attached entry about a, by the publisher,
// for this envelope and document, included in a checkpoint co-signed by
// the log key root lists, and the document, if given, is the one the
// statement names. It returns the verified statement. Errors wrap
// ErrVerification and give every reason.
func SBOM(ev SBOMEvidence, a Artifact, root *trustroot.Root, o Options) (*attest.SBOMRef, error) {
	if root == nil {
		return nil, fmt.Errorf("%w: SBOM of %s@%s: no usable trust root", ErrVerification, a.Name, a.Version)
	}
	var problems []string
	entry, _, err := Entry(ev.Entry, root)
	if err != nil {
		problems = append(problems, strings.TrimPrefix(err.Error(), ErrVerification.Error()+": "))
		entry = nil
	}
	env, err := attest.ParseEnvelope(ev.Envelope)
	if err != nil {
		return nil, fmt.Errorf("%w: SBOM of %s@%s: the envelope is malformed: %v", ErrVerification, a.Name, a.Version, err)
	}
	var ref *attest.SBOMRef
	var sigProblems []string
	for _, s := range env.Signatures {
		one := attest.Envelope{PayloadType: env.PayloadType, Payload: env.Payload, Signatures: []attest.Signature{s}}
		keyID, err := one.Verify(root.Keys(attest.PurposeArtifact), attest.PurposeArtifact)
		if err != nil {
			sigProblems = append(sigProblems, fmt.Sprintf("the signature by key %s does not verify as an artifact key of trust root v%d", quote.Prefix(s.KeyID), root.Version))
			continue
		}
		if err := keyValid(root, keyID, entry, a.Channel, o); err != nil {
			sigProblems = append(sigProblems, err.Error())
			continue
		}
		st, err := attest.ParseStatement(env.Payload)
		if err == nil {
			ref, err = st.SBOM()
		}
		if err != nil {
			return nil, fmt.Errorf("%w: SBOM of %s@%s: the envelope is signed but is no SBOM statement: %v", ErrVerification, a.Name, a.Version, err)
		}
		break
	}
	if ref == nil {
		problems = append(problems, "the SBOM envelope is not signed by a valid artifact key: "+strings.Join(sigProblems, "; "))
	} else {
		if ref.ArtifactName != a.Name || ref.ArtifactDigest != a.Digest {
			problems = append(problems, fmt.Sprintf("the SBOM statement is about %s (%s), not %s (%s)", quote.Prefix(ref.ArtifactName), quoteDigest(ref.ArtifactDigest), a.Name, a.Digest))
		}
		if ev.Document != nil && !ref.Describes(ev.Document) {
			problems = append(problems, fmt.Sprintf("the document does not hash to %s, which the statement names", ref.DocumentDigest))
		}
	}
	if entry != nil {
		problems = append(problems, sbomEntryProblems(entry, a, ev.Envelope, ref)...)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: SBOM of %s@%s: %s", ErrVerification, a.Name, a.Version, strings.Join(problems, "; "))
	}
	return ref, nil
}

func sbomEntryProblems(entry *tlog.Entry, a Artifact, envelope []byte, ref *attest.SBOMRef) []string {
	var problems []string
	if entry.Type != tlog.TypeSBOMAttached || entry.Subject.Digest != a.Digest {
		problems = append(problems, fmt.Sprintf("log entry is a %s about %s, not an %s about %s", quote.Prefix(entry.Type), quoteDigest(entry.Subject.Digest), tlog.TypeSBOMAttached, a.Digest))
	}
	var d sbomEntryDetails
	if err := strictjson.Decode(entry.Details, tlog.MaxEntrySize, &d); err != nil {
		return append(problems, fmt.Sprintf("log entry details: %v", err))
	}
	sum := sha256.Sum256(envelope)
	switch {
	case d.Name != a.Name || d.Version != a.Version || d.Digest != a.Digest:
		problems = append(problems, fmt.Sprintf("log entry is about %s@%s (%s)", quote.Prefix(d.Name), quote.Prefix(d.Version), quoteDigest(d.Digest)))
	case d.EnvelopeSHA256 != hex.EncodeToString(sum[:]):
		problems = append(problems, "log entry records another SBOM envelope")
	case ref != nil && (d.Document != ref.DocumentDigest || d.Format != ref.Format):
		problems = append(problems, "log entry records another SBOM document")
	case d.By != a.BuilderID:
		problems = append(problems, fmt.Sprintf("log entry says the SBOM was attached by %s, not the artifact's builder %s", quote.Prefix(d.By), a.BuilderID))
	}
	if err := publisherWrote(entry.Actor, a.BuilderID); err != nil {
		problems = append(problems, fmt.Sprintf("log entry was written by %s: %v", quote.Prefix(entry.Actor), err))
	}
	return problems
}

// publisherWrote checks that actor may write sbom.attached entries (tlog's
// table: the publisher) in the builder's trust domain.
func publisherWrote(actor, builderID string) error {
	id, err := spiffeid.FromString(actor)
	if err != nil {
		return err
	}
	b, err := spiffeid.FromString(builderID)
	if err != nil {
		return err
	}
	return tlog.MayEmit(b.TrustDomain(), tlog.TypeSBOMAttached, id)
}

// SBOMComponents verifies ev as SBOM does, with its document (required),
// parses the document in the format the verified statement names, and
// checks that listed (the components the catalog served, in order) are
// the document's. It returns the components parsed from the attested
// document: what a caller may rely on. Errors wrap ErrVerification.
func SBOMComponents(ev SBOMEvidence, a Artifact, root *trustroot.Root, o Options, listed []sbom.Component) ([]sbom.Component, *attest.SBOMRef, error) {
	if ev.Document == nil {
		return nil, nil, fmt.Errorf("%w: SBOM of %s@%s: no document to check the components against", ErrVerification, a.Name, a.Version)
	}
	ref, err := SBOM(ev, a, root, o)
	if err != nil {
		return nil, nil, err
	}
	comps, err := sbom.ParseFormat(ref.Format, ev.Document)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: SBOM of %s@%s: the attested document does not parse: %v", ErrVerification, a.Name, a.Version, err)
	}
	if len(comps) != len(listed) {
		return nil, nil, fmt.Errorf("%w: SBOM of %s@%s: the catalog lists %d components, the attested document %d", ErrVerification, a.Name, a.Version, len(listed), len(comps))
	}
	for i := range comps {
		if comps[i] != listed[i] {
			return nil, nil, fmt.Errorf("%w: SBOM of %s@%s: component %d in the catalog (%s) differs from the attested document's (%s)",
				ErrVerification, a.Name, a.Version, i, quote.Prefix(listed[i].Name), quote.Prefix(comps[i].Name))
		}
	}
	return comps, ref, nil
}

// ComponentsFromProto converts the catalog's components.
func ComponentsFromProto(cs []*catalogv1.Component) []sbom.Component {
	out := make([]sbom.Component, len(cs))
	for i, c := range cs {
		out[i] = sbom.Component{PURL: c.GetPurl(), Name: c.GetName(), Version: c.GetVersion(), License: c.GetLicense()}
	}
	return out
}
