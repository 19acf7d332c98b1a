package tlog

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/quote"
)

// Event types that Custody's services log. Every emitter uses these
// constants, and Emitters says who may write each; a type that no family
// covers is refused.
const (
	// TypeArtifactPublished is the type of the entry the catalog logs when
	// it records a published artifact (catalog RecordArtifact).
	TypeArtifactPublished = "artifact.published"
	// TypeArtifactResigned is the type of the entry the catalog logs when a
	// new envelope over the same statement replaces an artifact's current
	// one (catalog RecordSignature, called by the signer).
	TypeArtifactResigned = "artifact.resigned"
	// TypeArtifactRetentionDeleted is the type of the entry the publisher
	// logs when its retention policy deleted a name@version (and, once no
	// other binding needs it, destroyed the blob's data key and ciphertext).
	TypeArtifactRetentionDeleted = "artifact.retention-deleted"
	// TypeArtifactRevoked is the type of the entry the gatekeeper logs when
	// an admin or security identity revoked one artifact for good
	// (gatekeeper RevokeArtifact, decision 0104). Its subject is the
	// artifact's digest; details carry digest, epoch_time, reason and by
	// (the revoker's SPIFFE ID).
	TypeArtifactRevoked = "artifact.revoked"
	// TypeSBOMAttached is the type of the entry the publisher logs when an
	// SBOM statement (attest.SBOMPredicateType) over a published artifact
	// was signed and stored. Its details carry name, version, digest (the
	// artifact's), format, document (the SBOM's sha256 digest), components
	// and by (the builder's SPIFFE ID). Decision 0075.
	TypeSBOMAttached = "sbom.attached"

	// TypeApprovalRequested and the other approval types are the signer's
	// digest-bound approval steps.
	TypeApprovalRequested = "approval.requested"
	TypeApprovalApproved  = "approval.approved"
	TypeApprovalRejected  = "approval.rejected"
	TypeApprovalSigned    = "approval.signed"

	// TypeKeyRotated and TypeKeyRevoked are the signer's key lifecycle.
	TypeKeyRotated = "key.rotated"
	TypeKeyRevoked = "key.revoked"
	// TypeTrustRootPublished is a new trust-root version.
	TypeTrustRootPublished = "trustroot.published"
	// TypeCheckpointCosignRefused is a checkpoint the signer refused to
	// co-sign.
	TypeCheckpointCosignRefused = "checkpoint.cosign-refused"

	// TypePurgeRequested, TypePurgeConfirmed and TypePurgeFailed are the
	// broker's purge jobs: a digest queued for purging on every CDN and
	// edge, one target's confirmation, one target's failed attempt.
	TypePurgeRequested = "purge.requested"
	TypePurgeConfirmed = "purge.confirmed"
	TypePurgeFailed    = "purge.failed"
	// TypeTokenIssued is one download grant the broker issued: details
	// decision_id, environment, expires (RFC 3339), requested_by (the
	// deployer's SPIFFE ID), edges and cdns (how many URLs of each).
	TypeTokenIssued = "token.issued"

	// TypeAdmissionDecided is one of the gatekeeper's admission decisions.
	TypeAdmissionDecided = "admission.decided"
	// TypeDeploymentRecorded is a deployment a deployer reported through
	// the gatekeeper under an allow decision (catalog RecordDeployment).
	TypeDeploymentRecorded = "deployment.recorded"

	// TypeRollbackRequested, TypeRollbackApproved and TypeRollbackGranted
	// are the gatekeeper's rollback approvals (decision 0078): a request to
	// admit a lower version of a name to an environment than the highest
	// deployed there, one distinct approver's approval, and the approval
	// that reached the quorum. Their details always carry id, name,
	// from_version, to_version, environment, requested_by, expires_at,
	// approvals, quorum and by.
	TypeRollbackRequested = "rollback.requested"
	TypeRollbackApproved  = "rollback.approved"
	TypeRollbackGranted   = "rollback.granted"

	// TypeAdvisoriesImported is one import of OSV advisories (catalog
	// ImportAdvisories, decision 0081), logged by the catalog with the
	// importer as actor. Its subject is the set's digest
	// (advisory.SetDigest); details carry digest, count, added, updated,
	// unchanged, ids (the ids added or changed, at most
	// MaxAdvisoryIDsLogged) and ids_omitted (how many more there were).
	TypeAdvisoriesImported = "advisories.imported"
	// TypeFindingRaised is one advisory found, on re-evaluation after an
	// import, to make the admission policy deny an artifact that was
	// admitted or deployed to an environment (decision 0097), logged by
	// the gatekeeper once per artifact, advisory and environment. Its
	// subject is the artifact; details carry advisory, severity,
	// environment, components, reasons, import_log_index and epoch_time.
	TypeFindingRaised = "finding.raised"

	// TypeVEXAdded is one OpenVEX document about one artifact (catalog
	// AddVEX, decision 0096), logged by the catalog with the submitting
	// security identity as actor. Its subject is the artifact's digest;
	// details carry name, version, digest and document, the OpenVEX
	// document itself (libs/vex), whose not_affected statements suppress
	// advisories for that artifact only.
	TypeVEXAdded = "vex.added"
)

// MaxAdvisoryIDsLogged bounds the ids an advisories.imported entry lists,
// so that the entry stays within MaxEntrySize; the set's digest commits to
// every id and document all the same.
const MaxAdvisoryIDsLogged = 1000

// Emitter is the identity, or the family of identities, allowed to write a
// family of event types: one SPIFFE ID path in the log's trust domain
// ("/service/signer"), or with Under set every path below it ("/edge").
type Emitter struct {
	Path  string
	Under bool
	// Or, when set, is another identity or family that may write the same
	// types.
	Or *Emitter
}

// The emitters of DESIGN.md's table "Who may write which event".
var (
	EmitterPublisher  = Emitter{Path: "/service/publisher"}
	EmitterSigner     = Emitter{Path: "/service/signer"}
	EmitterGatekeeper = Emitter{Path: "/service/gatekeeper"}
	EmitterBroker     = Emitter{Path: "/service/cdn-broker"}
	EmitterEdges      = Emitter{Path: "/edge", Under: true}
	// EmitterAdmins are the admin identities (/admin/*), EmitterSecurity
	// the security identities (/security/*): who imports advisories.
	EmitterAdmins   = Emitter{Path: "/admin", Under: true}
	EmitterSecurity = Emitter{Path: "/security", Under: true, Or: &EmitterAdmins}
	// EmitterSecurityOnly is the security identities without the admins:
	// who may say that an advisory does not affect an artifact.
	EmitterSecurityOnly = Emitter{Path: "/security", Under: true}
)

// Allows reports whether id, in trust domain td, is this emitter.
func (e Emitter) Allows(td spiffeid.TrustDomain, id spiffeid.ID) bool {
	if id.TrustDomain() != td {
		return false
	}
	if e.Or != nil && e.Or.Allows(td, id) {
		return true
	}
	if e.Under {
		return strings.HasPrefix(id.Path(), e.Path+"/")
	}
	return id.Path() == e.Path
}

func (e Emitter) String() string {
	s := e.Path
	if e.Under {
		s += "/*"
	}
	if e.Or != nil {
		s += " or " + e.Or.String()
	}
	return s
}

// Family is a set of event types: one exact type, or with a trailing ".*"
// every type that starts with the word before it ("approval.*").
type Family string

// Contains reports whether typ belongs to the family.
func (f Family) Contains(typ string) bool {
	if p, ok := strings.CutSuffix(string(f), ".*"); ok {
		return strings.HasPrefix(typ, p+".")
	}
	return typ == string(f)
}

// Rule says who emits one family of event types.
type Rule struct {
	Family  Family
	Emitter Emitter
}

// rules is the one table of who may write which event. Exact types come
// before the family they would otherwise fall in.
var rules = []Rule{
	{TypeArtifactResigned, EmitterSigner}, // through the catalog's RecordSignature
	{TypeArtifactRevoked, EmitterGatekeeper},
	{"artifact.*", EmitterPublisher},
	{"sbom.*", EmitterPublisher},
	{"signing.*", EmitterSigner},
	{"approval.*", EmitterSigner},
	{"key.*", EmitterSigner},
	{"trustroot.*", EmitterSigner},
	{TypeCheckpointCosignRefused, EmitterSigner},
	{"admission.*", EmitterGatekeeper},
	{"deployment.*", EmitterGatekeeper},
	{"rollback.*", EmitterGatekeeper},
	{"pause.*", EmitterGatekeeper},
	{"killswitch.*", EmitterGatekeeper},
	{"finding.*", EmitterGatekeeper},
	{"advisories.*", EmitterSecurity}, // and admins, through the catalog's ImportAdvisories
	{"vex.*", EmitterSecurityOnly},    // through the catalog's AddVEX
	{"token.*", EmitterBroker},
	{"purge.*", EmitterBroker},
	{"edge.*", EmitterEdges},
}

// Rules returns a copy of the table of event families and their emitters,
// in the order they are matched.
func Rules() []Rule { return append([]Rule(nil), rules...) }

var (
	// ErrUnknownType means no family covers the event type: nobody may
	// write it (deny by default).
	ErrUnknownType = errors.New("unknown event type")
	// ErrNotEmitter means the caller is not the emitter of the event type.
	ErrNotEmitter = errors.New("not the emitter of this event type")
)

// EmitterOf returns the emitter of typ, and false if no family covers it.
func EmitterOf(typ string) (Emitter, bool) {
	for _, r := range rules {
		if r.Family.Contains(typ) {
			return r.Emitter, true
		}
	}
	return Emitter{}, false
}

// MayEmit returns nil if caller may write an entry of type typ in a log of
// trust domain td. Otherwise the error wraps ErrUnknownType or
// ErrNotEmitter and names the type, the caller and, for the latter, the
// emitter.
func MayEmit(td spiffeid.TrustDomain, typ string, caller spiffeid.ID) error {
	e, ok := EmitterOf(typ)
	if !ok {
		return fmt.Errorf("%w %q: %s may not write it; nobody may", ErrUnknownType, quote.Prefix(typ), caller)
	}
	if !e.Allows(td, caller) {
		return fmt.Errorf("%w: %s may not write %s events, only spiffe://%s%s", ErrNotEmitter, caller, quote.Prefix(typ), td.Name(), e)
	}
	return nil
}
