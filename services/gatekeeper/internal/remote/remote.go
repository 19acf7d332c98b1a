// Package remote adapts the catalog, signer and publisher gRPC clients to
// the interfaces of the admission domain, turning their status codes into
// its errors.
package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/advisory"
	"github.com/custody-dev/custody/libs/eventlog"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/verify"
	"github.com/custody-dev/custody/libs/vex"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
)

// Catalog is the catalog service as the admission domain sees it.
type Catalog struct {
	client catalogv1.CatalogServiceClient
	// events sends the events of concurrent decisions together
	// (AppendEvents, decision 0087).
	events *eventlog.Appender
}

var _ admission.Catalog = (*Catalog)(nil)

// NewCatalog returns a Catalog calling client.
func NewCatalog(client catalogv1.CatalogServiceClient) *Catalog {
	return &Catalog{client: client, events: eventlog.New(client)}
}

// Evidence returns an artifact's record and evidence; ErrNotFound if the
// catalog has no such artifact.
func (c *Catalog) Evidence(ctx context.Context, name, version, digest string) (*admission.Evidence, error) {
	resp, err := c.client.GetArtifact(ctx, &catalogv1.GetArtifactRequest{Name: name, Version: version, Digest: digest})
	if status.Code(err) == codes.NotFound {
		return nil, fmt.Errorf("%w: %s", admission.ErrNotFound, status.Convert(err).Message())
	}
	if err != nil {
		return nil, fmt.Errorf("catalog GetArtifact: %w", err)
	}
	a := resp.GetArtifact()
	if a == nil {
		return nil, errors.New("catalog GetArtifact: response has no artifact")
	}
	ev := &admission.Evidence{Evidence: verify.FromProto(resp), CreatedAt: a.GetCreatedAt().AsTime()}
	switch resp.GetSbom() {
	case catalogv1.SBOMPresence_SBOM_PRESENCE_NONE:
		ev.SBOM = admission.SBOMNone
	case catalogv1.SBOMPresence_SBOM_PRESENCE_ATTACHED:
		ev.SBOM = admission.SBOMAttached
	}
	return ev, nil
}

// AppendEvent logs e and returns its entry's index once the entry is
// durably sequenced: a decision needs to be on the record before it is
// returned, not an inclusion proof (the catalog stores that later).
func (c *Catalog) AppendEvent(ctx context.Context, e admission.Event) (int64, error) {
	entry, err := c.events.Append(ctx, &catalogv1.AppendEventRequest{Type: e.Type, SubjectDigest: e.SubjectDigest, Details: e.Details,
		Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED})
	if err != nil {
		return 0, fmt.Errorf("catalog AppendEvent: %w", err)
	}
	return entry.GetIndex(), nil
}

// RecordDeployment has the catalog log and store a verified deployment and
// returns its entry's index once the entry is durably sequenced.
func (c *Catalog) RecordDeployment(ctx context.Context, d admission.Deployment) (int64, error) {
	resp, err := c.client.RecordDeployment(ctx, &catalogv1.RecordDeploymentRequest{
		Name: d.Name, Version: d.Version, Digest: d.Digest, Environment: d.Environment,
		DecisionId: d.DecisionID, DecisionEnvelopeSha256: d.DecisionEnvelopeSHA256, ReportedBy: d.ReportedBy,
	})
	if err != nil {
		return 0, fmt.Errorf("catalog RecordDeployment: %w", err)
	}
	if resp.GetEntry() == nil {
		return 0, errors.New("catalog RecordDeployment: response has no entry")
	}
	return resp.GetEntry().GetIndex(), nil
}

// maxDeploymentPages bounds how many pages of deployments one admission
// reads; a name with more is refused (Unavailable) rather than judged on
// part of its history.
const maxDeploymentPages = 20

var _ admission.Deployments = (*Catalog)(nil)

// DeployedVersions returns every version of name the catalog recorded as
// deployed to env, from its search by name and deployed environment.
func (c *Catalog) DeployedVersions(ctx context.Context, name, env string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	token := ""
	for range maxDeploymentPages {
		resp, err := c.client.SearchArtifacts(ctx, &catalogv1.SearchArtifactsRequest{Name: name, DeployedEnvironment: env, PageToken: token})
		if err != nil {
			return nil, fmt.Errorf("catalog SearchArtifacts: %w", err)
		}
		for _, d := range resp.GetDeployments() {
			if d.GetName() == name && d.GetEnvironment() == env && !seen[d.GetVersion()] {
				seen[d.GetVersion()] = true
				out = append(out, d.GetVersion())
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
	return nil, fmt.Errorf("catalog SearchArtifacts: more than %d pages of deployments of %s to %s", maxDeploymentPages, name, env)
}

// Signer is the signer service as the admission domain sees it.
type Signer struct {
	client signerv1.SignerServiceClient
	logger *slog.Logger
}

var _ admission.Signer = (*Signer)(nil)

// NewSigner returns a Signer calling client.
func NewSigner(client signerv1.SignerServiceClient, logger *slog.Logger) *Signer {
	return &Signer{client: client, logger: logger}
}

// TrustRoots returns the signer's trust-root envelopes after version
// after, oldest first, unverified.
func (s *Signer) TrustRoots(ctx context.Context, after int64) ([][]byte, error) {
	resp, err := s.client.GetTrustRoot(ctx, &signerv1.GetTrustRootRequest{AfterVersion: after})
	if err != nil {
		return nil, fmt.Errorf("signer GetTrustRoot after v%d: %w", after, err)
	}
	return resp.GetRoots(), nil
}

// Revocations returns the revocation time of every key version that
// ListPublicKeys reports revoked. A revoked key without a revocation time
// is logged and taken as revoked since the beginning: failing closed.
// Nothing else from ListPublicKeys is used: keys come from the trust root.
func (s *Signer) Revocations(ctx context.Context) (map[string]time.Time, error) {
	resp, err := s.client.ListPublicKeys(ctx, &signerv1.ListPublicKeysRequest{})
	if err != nil {
		return nil, fmt.Errorf("signer ListPublicKeys: %w", err)
	}
	revoked := map[string]time.Time{}
	for _, k := range resp.GetKeys() {
		if k.GetStatus() != signerv1.KeyStatus_KEY_STATUS_REVOKED || k.GetKeyId() == "" {
			continue
		}
		at := time.Unix(0, 0).UTC()
		if k.GetRevokedAt() != nil {
			at = k.GetRevokedAt().AsTime()
		} else {
			s.logger.WarnContext(ctx, "the signer reports a revoked key without a revocation time: treating all its signatures as revoked",
				slog.String("key_id", k.GetKeyId()))
		}
		revoked[k.GetKeyId()] = at
	}
	return revoked, nil
}

// SignDecision has the signer sign a decision statement.
func (s *Signer) SignDecision(ctx context.Context, statement []byte) ([]byte, error) {
	resp, err := s.client.SignDecision(ctx, &signerv1.SignDecisionRequest{Statement: statement})
	if err != nil {
		return nil, fmt.Errorf("signer SignDecision: %w", err)
	}
	if len(resp.GetEnvelope()) == 0 {
		return nil, errors.New("signer SignDecision: empty envelope")
	}
	return resp.GetEnvelope(), nil
}

// Publisher is the publisher service as the admission domain sees it.
type Publisher struct {
	client publisherv1.PublisherServiceClient
}

var _ admission.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher calling client.
func NewPublisher(client publisherv1.PublisherServiceClient) *Publisher {
	return &Publisher{client: client}
}

// VerifyBlob asks the publisher to re-check a stored blob: ErrNotFound if it
// is missing, ErrCorrupt if its bytes no longer match.
func (p *Publisher) VerifyBlob(ctx context.Context, digest string) error {
	_, err := p.client.VerifyBlob(ctx, &publisherv1.VerifyBlobRequest{Digest: digest})
	switch status.Code(err) {
	case codes.OK:
		return nil
	case codes.NotFound:
		return fmt.Errorf("%w: %s", admission.ErrNotFound, status.Convert(err).Message())
	case codes.DataLoss:
		return fmt.Errorf("%w: %s", admission.ErrCorrupt, status.Convert(err).Message())
	default:
		return fmt.Errorf("publisher VerifyBlob: %w", err)
	}
}

// SBOM returns the components of the SBOM attached to a, an artifact
// whose evidence the caller verified against root, after verifying the SBOM
// attestation, its log entry and the document against root with o's
// revocations (verify.SBOMComponents: the components are parsed from the attested
// document, and the catalog's list must be the same). ErrNotFound if a has
// no SBOM; a verification failure wraps verify.ErrVerification, and then
// the result still carries the envelope that failed. It fetches the
// document (up to 8 MiB) and parses it: callers that match many artifacts
// cache by document digest.
func (c *Catalog) SBOM(ctx context.Context, a verify.Artifact, root *trustroot.Root, o verify.Options) (*admission.VerifiedSBOM, error) {
	resp, err := c.client.GetSBOM(ctx, &catalogv1.GetSBOMRequest{Name: a.Name, Version: a.Version, IncludeDocument: true}, sbom.CallOptions()...)
	if status.Code(err) == codes.NotFound {
		return nil, fmt.Errorf("%w: %s", admission.ErrNotFound, status.Convert(err).Message())
	}
	if err != nil {
		return nil, fmt.Errorf("catalog GetSBOM: %w", err)
	}
	b := resp.GetSbom()
	if b.GetLogIndex() < 0 {
		return nil, errors.New("catalog GetSBOM: negative log index")
	}
	p, err := c.client.GetInclusionProof(ctx, &catalogv1.GetInclusionProofRequest{Index: uint64(b.GetLogIndex())})
	if err != nil {
		return nil, fmt.Errorf("catalog GetInclusionProof of the sbom.attached entry %d: %w", b.GetLogIndex(), err)
	}
	ev := verify.SBOMEvidence{Envelope: b.GetEnvelope(), Document: b.GetDocument(),
		Entry: verify.LogEntry{Index: b.GetLogIndex(), Leaf: p.GetLeaf(), InclusionProof: p.GetInclusionProof(), Checkpoint: p.GetCheckpoint()}}
	comps, ref, err := verify.SBOMComponents(ev, a, root, o, verify.ComponentsFromProto(b.GetComponents()))
	return &admission.VerifiedSBOM{Components: comps, Ref: ref, Envelope: b.GetEnvelope()}, err
}

// MaxAdvisories bounds the advisory documents one admission reads (each
// up to advisory.MaxDocBytes): an artifact the catalog names more
// candidates for is denied (admission.ErrIncomplete), not half checked.
const MaxAdvisories = 1000

// MaxAdvisoryBytes bounds the advisory documents one admission reads in
// all; past it the admission is denied (admission.ErrIncomplete). The
// parsed documents are held until the match is done.
const MaxAdvisoryBytes = 64 << 20

var _ admission.Advisories = (*Catalog)(nil)

// Advisories returns the advisories affecting comps, the components of
// a's verified SBOM. The catalog's ListFindings names the candidate
// advisories (its match over its stored copy of the same components);
// each candidate's document is read with GetAdvisory, parsed by
// libs/advisory and matched here against comps, so a finding the
// documents do not support is dropped and the severity is the document's,
// never the catalog's word. A truncated candidate list, more than
// MaxAdvisories candidates or more than MaxAdvisoryBytes of documents is
// admission.ErrIncomplete.
func (c *Catalog) Advisories(ctx context.Context, a verify.Artifact, comps []sbom.Component) ([]advisory.Match, error) {
	resp, err := c.client.ListFindings(ctx, &catalogv1.ListFindingsRequest{Name: a.Name, Version: a.Version})
	if err != nil {
		// NotFound too: the gatekeeper verified an SBOM the catalog now
		// says is not there, so the findings cannot be read.
		return nil, fmt.Errorf("catalog ListFindings: %w", err)
	}
	if resp.GetTruncated() {
		return nil, fmt.Errorf("%w: the catalog's findings were truncated", admission.ErrIncomplete)
	}
	var ids []string
	seen := map[string]bool{}
	for _, f := range resp.GetFindings() {
		if id := f.GetAdvisoryId(); !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) > MaxAdvisories {
		return nil, fmt.Errorf("%w: the catalog names %d advisories, more than %d", admission.ErrIncomplete, len(ids), MaxAdvisories)
	}
	advs := make([]*advisory.Advisory, 0, len(ids))
	total := 0
	for _, id := range ids {
		if !advisory.ValidID(id) {
			return nil, fmt.Errorf("catalog ListFindings: advisory id %q is not an OSV id", quote.Prefix(id))
		}
		r, err := c.client.GetAdvisory(ctx, &catalogv1.GetAdvisoryRequest{Id: id})
		if err != nil {
			return nil, fmt.Errorf("catalog GetAdvisory %s: %w", id, err)
		}
		if total += len(r.GetDocument()); total > MaxAdvisoryBytes {
			return nil, fmt.Errorf("%w: the advisories the catalog names are more than %d MiB", admission.ErrIncomplete, MaxAdvisoryBytes>>20)
		}
		adv, err := advisory.Parse(r.GetDocument())
		if err != nil {
			return nil, fmt.Errorf("catalog GetAdvisory %s: %w", id, err)
		}
		if adv.ID != id {
			return nil, fmt.Errorf("catalog GetAdvisory %s: served the document of %s", id, quote.Prefix(adv.ID))
		}
		adv.Raw = nil // matching reads the decoded document only
		advs = append(advs, adv)
	}
	return advisory.NewIndex(advs).MatchAll(comps), nil
}

// entriesPage is how many log entries Entries asks for at once: the
// catalog's maximum.
const entriesPage = 1000

// Entries returns the leaves of the log entries from start within the
// catalog's latest co-signed checkpoint, at most 1,000, and that
// checkpoint (a signed note, unverified: the caller opens it and proves
// the leaves against it). The catalog refuses a start at or past the
// checkpoint's size as InvalidArgument: then Entries returns no leaves
// and the checkpoint GetCheckpoint serves, so that the caller can tell
// "caught up" (its size is start) from a catalog withholding entries or
// rolled back.
func (c *Catalog) Entries(ctx context.Context, start uint64) ([][]byte, []byte, error) {
	resp, err := c.client.GetEntries(ctx, &catalogv1.GetEntriesRequest{Start: start, PageSize: entriesPage})
	if status.Code(err) == codes.InvalidArgument {
		cp, err := c.LogCheckpoint(ctx)
		if err != nil {
			return nil, nil, err
		}
		return nil, cp, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("catalog GetEntries: %w", err)
	}
	if len(resp.GetCheckpoint()) == 0 {
		return nil, nil, errors.New("catalog GetEntries: no checkpoint with the entries")
	}
	return resp.GetEntries(), resp.GetCheckpoint(), nil
}

var _ admission.VEX = (*Catalog)(nil)

// VEX returns the vex.added entries about a (catalog ListVex), verified
// against root by libs/verify's VEX check, in log order. A listing the
// catalog marks truncated is admission.ErrIncomplete; an entry that fails
// verification wraps verify.ErrVerification.
func (c *Catalog) VEX(ctx context.Context, a verify.Artifact, root *trustroot.Root) ([]vex.Entry, error) {
	resp, err := c.client.ListVex(ctx, &catalogv1.ListVexRequest{Name: a.Name, Version: a.Version})
	if err != nil {
		return nil, fmt.Errorf("catalog ListVex: %w", err)
	}
	if resp.GetTruncated() {
		return nil, fmt.Errorf("%w: the catalog's VEX entries were truncated", admission.ErrIncomplete)
	}
	entries := make([]verify.LogEntry, len(resp.GetEntries()))
	for i, e := range resp.GetEntries() {
		entries[i] = verify.EntryFromProto(e)
	}
	return verify.VEX(entries, a, root)
}

// LogCheckpoint returns the catalog's latest co-signed checkpoint
// (GetCheckpoint), unverified: loghead opens it with the trust root's key.
func (c *Catalog) LogCheckpoint(ctx context.Context) ([]byte, error) {
	resp, err := c.client.GetCheckpoint(ctx, &catalogv1.GetCheckpointRequest{})
	if err != nil {
		return nil, fmt.Errorf("catalog GetCheckpoint: %w", err)
	}
	if len(resp.GetCheckpoint()) == 0 {
		return nil, errors.New("catalog GetCheckpoint: empty checkpoint")
	}
	return resp.GetCheckpoint(), nil
}

// LogConsistency returns the catalog's consistency proof from the tree of
// size first to the tree of size second (GetConsistencyProof),
// unverified.
func (c *Catalog) LogConsistency(ctx context.Context, first, second uint64) ([][]byte, error) {
	resp, err := c.client.GetConsistencyProof(ctx, &catalogv1.GetConsistencyProofRequest{FirstSize: first, SecondSize: second})
	if err != nil {
		return nil, fmt.Errorf("catalog GetConsistencyProof %d → %d: %w", first, second, err)
	}
	if resp.GetFirstSize() != first || resp.GetSecondSize() != second {
		return nil, fmt.Errorf("catalog GetConsistencyProof: asked %d → %d, answered %d → %d", first, second, resp.GetFirstSize(), resp.GetSecondSize())
	}
	return resp.GetConsistencyProof(), nil
}
