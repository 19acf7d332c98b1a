// Package catalog records artifacts and audit events in the transparency log
// and keeps their metadata and evidence.
package catalog

import (
	"context"
	"errors"
	"time"

	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/translog"
)

var (
	// ErrInvalid means the request is malformed; the message says which field.
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound means no artifact matches what was asked.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists means name@version is recorded with another digest.
	ErrAlreadyExists = errors.New("already exists")
	// ErrUnavailable means the log or the database failed; nothing was
	// answered from partial state and the caller may retry.
	ErrUnavailable = errors.New("catalog unavailable")
	// ErrIntegrity means stored or logged evidence does not verify.
	ErrIntegrity = errors.New("integrity failure")
	// ErrPermissionDenied means the caller may not write this entry type
	// (tlog.MayEmit); nothing was stored or logged.
	ErrPermissionDenied = errors.New("permission denied")
)

// Artifact is the metadata of one published name@version.
type Artifact struct {
	Name, Version string
	// Digest is "sha256:<64 lowercase hex>".
	Digest       string
	Size         int64
	Channel      string
	BuilderID    string
	SourceRepo   string
	SourceCommit string
	CreatedAt    time.Time
}

// Entry is the log side of a stored row: the leaf, and once the leaf is
// logged, its index, inclusion proof and the checkpoint the proof is for.
type Entry struct {
	Leaf []byte
	// SearchFrom is the log's size before the leaf was first appended: if
	// the leaf is in the log, it is at this index or later.
	SearchFrom uint64
	// Sequenced says the log assigned Index to the leaf.
	Sequenced bool
	Index     uint64
	// Proof and Checkpoint are set once the entry is logged.
	Proof      [][]byte
	Checkpoint []byte
}

// Logged reports whether the entry is in the log with its evidence stored.
func (e *Entry) Logged() bool { return len(e.Checkpoint) > 0 }

// ArtifactRecord is a stored artifact with its envelopes and log entries.
type ArtifactRecord struct {
	ID       int64
	Artifact Artifact
	// Envelope is the envelope the artifact was recorded with, KeyID the
	// key id of its signature, and Entry its artifact.published entry.
	Envelope []byte
	KeyID    string
	Entry    Entry
	// Resigned is the latest logged re-signature, whose envelope replaced
	// Envelope as the current one; nil if the artifact was never re-signed.
	Resigned *Signature
	// Dependencies are the resolved dependencies of the recorded envelope's
	// provenance: the artifact's lineage edges, stored with it. Store reads
	// of a record leave it nil.
	Dependencies []Dependency
}

// Current returns the artifact's current envelope, the key id of its
// signature and its log entry: the latest re-signature's if there is one,
// else those the artifact was recorded with.
func (r *ArtifactRecord) Current() (envelope []byte, keyID string, entry *Entry) {
	if r.Resigned != nil {
		return r.Resigned.Envelope, r.Resigned.KeyID, &r.Resigned.Entry
	}
	return r.Envelope, r.KeyID, &r.Entry
}

// Signature is one re-signature of an artifact: an envelope over the same
// statement as the one it replaced, and its artifact.resigned entry. The
// signatures of an artifact, in ID order, are the history of its envelope
// after the one it was recorded with.
type Signature struct {
	ID         int64
	ArtifactID int64
	Envelope   []byte
	KeyID      string
	// Actor is the SPIFFE ID of the caller that recorded it.
	Actor     string
	CreatedAt time.Time
	Entry     Entry
}

// Listed is one artifact of a listing, with the key id of its current
// envelope's signature and when that envelope was recorded: the artifact's
// CreatedAt if it was never re-signed, else its current (latest logged)
// re-signature's CreatedAt.
type Listed struct {
	ID       int64
	Artifact Artifact
	KeyID    string
	SignedAt time.Time
}

// Event is a stored audit event.
type Event struct {
	ID            int64
	Type          string
	Actor         string
	SubjectDigest string
	Details       []byte
	CreatedAt     time.Time
	Entry         Entry
}

// Kind says which table a Ref points into.
type Kind string

// Row kinds.
const (
	KindArtifact  Kind = "artifact"
	KindEvent     Kind = "event"
	KindSignature Kind = "signature"
)

// Ref names one stored row.
type Ref struct {
	Kind Kind
	ID   int64
}

// Pending is a row whose leaf was committed to the database but is not yet
// known to be logged.
type Pending struct {
	Ref   Ref
	Entry Entry
}

// Deployment is one recorded deployment of an artifact to an environment.
type Deployment struct {
	ID         int64
	ArtifactID int64
	// Environment is the environment's name, as admissions name it.
	Environment string
	// Actor is the SPIFFE ID of the caller that reported the deployment.
	Actor      string
	DeployedAt time.Time
}

// SBOM is the SBOM attached to one artifact, with its signed statement.
type SBOM struct {
	ID         int64
	ArtifactID int64
	// Artifact is the artifact it describes; reads set it, InsertSBOM
	// ignores it.
	Artifact Artifact
	// Format is sbom.FormatCycloneDX or sbom.FormatSPDX.
	Format string
	// DocumentDigest is "sha256:<hex>" of Document.
	DocumentDigest string
	// Document is the SBOM's bytes; reads leave it nil unless asked for.
	Document []byte
	// Envelope is the DSSE envelope over the SBOM statement, KeyID the key
	// id of its signature.
	Envelope []byte
	KeyID    string
	// AttachedBy is the SPIFFE ID of the builder that attached it.
	AttachedBy string
	AttachedAt time.Time
	// LogIndex is the index of its sbom.attached entry.
	LogIndex uint64
	// Components are the document's, in document order.
	Components []sbom.Component
}

// ArtifactComponent is one component of a logged artifact's SBOM.
type ArtifactComponent struct {
	Artifact  Artifact
	Component sbom.Component
}

// Query selects artifacts in a search. Every field that is set must match
// exactly; an empty Query matches every logged artifact.
type Query struct {
	Name, Version, Digest string
	BuilderID             string
	SourceRepo            string
	SourceCommit          string
	Channel               string
	// KeyID matches artifacts whose current envelope is signed by this key
	// version (its key id, as the signer's ListPublicKeys gives it).
	KeyID string
	// Environment matches artifacts with at least one deployment to it.
	Environment string
}

// Store keeps artifacts, events and their log evidence: the catalog's
// metadata repository. Back ends: store/sqlite (the embedded default) and
// store/postgres (shared by several catalog processes); both pass the
// conformance suite in store/storetest.
//
// What a back end decides: durability (a nil error from a write means
// committed), the uniqueness rules below (name@version once, one pending
// signature per artifact, one row per log index), the atomicity of
// SetLogged, and the order of listings (by ID, which grows with insertion).
// Uniqueness is enforced by the database, so it holds between processes
// that share it.
//
// What a back end does not decide: what is in the transparency log, whether
// an envelope or its evidence verifies (the catalog re-verifies everything
// it reads before serving it), who may call what, page tokens (the catalog
// encodes IDs into them), times (the caller sets CreatedAt and DeployedAt)
// and input validity (the catalog validates before it stores).
//
// Errors: ErrNotFound and ErrAlreadyExists, wrapped, where documented; the
// caller of a write that fails with ErrAlreadyExists re-reads the row and
// decides (idempotent retry, or a conflict to report). Any other error
// means the database failed or is unreachable: nothing was written, and the
// caller fails with ErrUnavailable and may retry. Implementations are safe
// for concurrent use.
type Store interface {
	// InsertArtifact stores r as pending and returns its ID; it fails with
	// ErrAlreadyExists if name@version is already stored, in any state.
	InsertArtifact(ctx context.Context, r *ArtifactRecord) (int64, error)
	// Artifact returns name@version in any state, with its current logged
	// re-signature if any, or ErrNotFound.
	Artifact(ctx context.Context, name, version string) (*ArtifactRecord, error)
	// LoggedArtifactsByDigest returns the logged artifacts with this digest,
	// oldest first, each with its current logged re-signature if any.
	LoggedArtifactsByDigest(ctx context.Context, digest string) ([]*ArtifactRecord, error)
	// InsertEvent stores e as pending and returns its ID. The catalog no
	// longer writes pending events (IndexEvents stores them from the log);
	// rows pending from earlier versions are still finished by Recover.
	InsertEvent(ctx context.Context, e *Event) (int64, error)
	// IndexedSize returns the log size up to which every event entry of
	// the log is stored (0 for a new store).
	IndexedSize(ctx context.Context) (uint64, error)
	// IndexEvents stores logged events, each with its index, proof and
	// checkpoint, and raises the indexed size to size (never lowers it), in
	// one transaction: either all of it is durable or none. An event whose
	// log index is already stored is skipped, so indexing a range again is
	// harmless.
	IndexEvents(ctx context.Context, events []*Event, size uint64) error
	// DeleteEvent removes a pending event whose leaf is known not to be in
	// the log.
	DeleteEvent(ctx context.Context, id int64) error
	// InsertSignature stores s as pending and returns its ID; it fails with
	// ErrAlreadyExists if the artifact already has a pending signature.
	InsertSignature(ctx context.Context, s *Signature) (int64, error)
	// PendingSignature returns the artifact's pending signature, or
	// ErrNotFound.
	PendingSignature(ctx context.Context, artifactID int64) (*Signature, error)
	// ListArtifacts returns up to limit logged artifacts with an ID above
	// afterID, in ID order; with keyID set, only those whose current
	// envelope is signed by keyID.
	ListArtifacts(ctx context.Context, keyID string, afterID int64, limit int) ([]Listed, error)
	// SearchArtifacts returns up to limit logged artifacts that match q,
	// with an ID above afterID, in ID order, each with the key id of its
	// current envelope. Every filter is answered from an index.
	SearchArtifacts(ctx context.Context, q Query, afterID int64, limit int) ([]Listed, error)
	// InsertDeployment stores d and returns its ID; it fails with
	// ErrNotFound if d.ArtifactID is not a stored artifact.
	InsertDeployment(ctx context.Context, d *Deployment) (int64, error)
	// InsertSBOM stores s with its components in one transaction and
	// returns its ID; it fails with ErrAlreadyExists if the artifact
	// already has an SBOM, and ErrNotFound if s.ArtifactID is not a stored
	// artifact.
	InsertSBOM(ctx context.Context, s *SBOM) (int64, error)
	// SBOM returns the SBOM of the artifact artifactID, with its document
	// if withDocument, or ErrNotFound.
	SBOM(ctx context.Context, artifactID int64, withDocument bool) (*SBOM, error)
	// HasSBOM reports whether the artifact artifactID has an SBOM, reading
	// no more than that (GetArtifact answers it on every read).
	HasSBOM(ctx context.Context, artifactID int64) (bool, error)
	// SBOMByDigest returns the oldest SBOM (by ID) of the logged artifacts
	// with digest, with its document if withDocument, or ErrNotFound.
	SBOMByDigest(ctx context.Context, digest string, withDocument bool) (*SBOM, error)
	// SetSequenced records the log index of a pending row's leaf.
	SetSequenced(ctx context.Context, ref Ref, index uint64) error
	// SetLogged records a row's index, proof and checkpoint; the row is no
	// longer pending. A signature becomes, in the same transaction, its
	// artifact's current envelope unless a later signature already is.
	SetLogged(ctx context.Context, ref Ref, index uint64, proof [][]byte, checkpoint []byte) error
	// Pending returns every pending row.
	Pending(ctx context.Context) ([]Pending, error)

	// InsertArtifact also stores r.Dependencies as the artifact's lineage
	// edges, in the same transaction. The lineage methods below see only
	// the edges of logged artifacts.

	// EntriesBySubject returns up to limit logged entries about digest
	// (artifacts with it, their signatures, events with it as subject)
	// with a log index above afterIndex (-1 for all), in log order.
	EntriesBySubject(ctx context.Context, digest string, afterIndex int64, limit int) ([]Entry, error)
	// EventsOfType returns up to limit logged events of type typ about
	// digest, in log order.
	EventsOfType(ctx context.Context, digest, typ string, limit int) ([]Entry, error)
	// Lineage returns up to limit distinct edges reachable from node in
	// direction dir, in the order a breadth-first walk reaches them,
	// each once even if the graph has cycles; Depth is left to the caller.
	Lineage(ctx context.Context, node string, dir Direction, limit int) ([]Edge, error)
	// LoggedArtifactsByDigests returns the logged artifacts whose digest is
	// one of digests, in ID order.
	LoggedArtifactsByDigests(ctx context.Context, digests []string) ([]Listed, error)
	// DeploymentsOf returns the deployments of the logged artifacts whose
	// digest is one of digests, each with its artifact, in deployment ID
	// order.
	DeploymentsOf(ctx context.Context, digests []string) ([]Deployed, error)

	// AdvisoryImport returns the import of the set with this digest, or
	// ErrNotFound.
	AdvisoryImport(ctx context.Context, setDigest string) (*AdvisoryImport, error)
	// AdvisoryDigests returns the stored document digest of each of ids
	// that is stored; ids not stored are absent from the map.
	AdvisoryDigests(ctx context.Context, ids []string) (map[string]string, error)
	// ImportAdvisories stores imp and advs in one transaction and returns
	// imp's ID: each advisory is inserted, or replaces the stored one of
	// its id (with its packages) when its digest differs, and is left as
	// it is otherwise. It fails with ErrAlreadyExists, writing nothing, if
	// an import of imp.SetDigest is stored.
	ImportAdvisories(ctx context.Context, imp *AdvisoryImport, advs []StoredAdvisory) (int64, error)
	// Advisory returns the stored advisory id with its packages, or
	// ErrNotFound.
	Advisory(ctx context.Context, id string) (*StoredAdvisory, error)
	// AdvisoriesByPackages returns up to limit stored advisories that name
	// any of pkgs, each once, in id order, without their packages.
	AdvisoriesByPackages(ctx context.Context, pkgs []AdvisoryPackage, limit int) ([]StoredAdvisory, error)
	// ComponentsByPackage returns up to limit SBOM components of logged
	// artifacts whose purl names pkg (ComponentPackage), with their
	// artifacts, in artifact ID then document order.
	ComponentsByPackage(ctx context.Context, pkg AdvisoryPackage, limit int) ([]ArtifactComponent, error)
}

// Log is the transparency log.
type Log interface {
	// Size returns the integrated tree size; later appends get larger
	// indices.
	Size(ctx context.Context) (uint64, error)
	Append(ctx context.Context, leaf []byte) (*translog.Proved, error)
	Prove(ctx context.Context, index uint64, leaf []byte) (*translog.Proved, error)
	Find(ctx context.Context, leaf []byte, from uint64) (uint64, bool, error)
	// Sequence appends leaf and returns its index once it is durably
	// sequenced; an error means it was not.
	Sequence(ctx context.Context, leaf []byte) (uint64, error)
	// Entries returns the leaves [start, start+n) of the tree of size
	// entries, which must not exceed Size.
	Entries(ctx context.Context, start, n, size uint64) ([][]byte, error)
	// ProveAll proves sequenced leaves against one served checkpoint.
	ProveAll(ctx context.Context, leaves []translog.Leaf) ([]*translog.Proved, []error, error)
	Checkpoint(ctx context.Context) ([]byte, *tlog.Checkpoint, error)
}

var _ Log = (*translog.Log)(nil)
