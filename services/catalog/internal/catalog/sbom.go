package catalog

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"crypto/sha256"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/libs/tlog"
)

// SBOMAttachment is an SBOM as the publisher sends it: the document, the
// envelope over its SBOM statement, and the builder that attached it.
type SBOMAttachment struct {
	Name, Version string
	Document      []byte
	Envelope      []byte
	// AttachedBy is the builder's SPIFFE ID, as the publisher
	// authenticated it.
	AttachedBy string
}

// sbomDetails are the details of an sbom.attached entry (tlog.TypeSBOMAttached).
type sbomDetails struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	Digest     string `json:"digest"`
	Format     string `json:"format"`
	Document   string `json:"document"`
	Components int    `json:"components"`
	By         string `json:"by"`
	// EnvelopeSHA256 is the lowercase hex SHA-256 of the signed statement's
	// envelope: the entry binds the stored attestation.
	EnvelopeSHA256 string `json:"envelope_sha256"`
}

// ErrNotBuilder is wrapped by RecordSBOM's refusal of an SBOM attached by
// another identity than the artifact's builder.
var ErrNotBuilder = fmt.Errorf("%w: only the builder that published an artifact may attach its SBOM", ErrPermissionDenied)

// RecordSBOM stores the SBOM of a logged artifact and logs it as an
// sbom.attached entry, with actor (the publisher: tlog.MayEmit) as its
// actor, then returns the stored SBOM (without its document).
//
// It checks, before anything is logged or stored: that a.AttachedBy is the
// artifact's builder (else ErrNotBuilder); that the envelope is over an SBOM
// statement whose subject is the artifact's name and digest and whose
// document digest is that of a.Document; and it parses the document itself
// (libs/sbom, at most the parser's slots at once) into the components it
// stores, in the format the statement names. Any of these failing is
// ErrInvalid. It does not verify the envelope's signature: the catalog
// holds no signer keys; readers verify it against the trust root.
//
// An artifact has at most one SBOM (decision 0076): the same document again
// returns the stored SBOM and created=false, whoever's envelope it comes
// with; another document fails with ErrAlreadyExists. The entry is logged
// through the one event path (durably sequenced), then the row is stored;
// if storing fails after that, it fails with ErrUnavailable and a retry
// logs the attachment again: attachments are logged at least once.
func (c *Catalog) RecordSBOM(ctx context.Context, actor string, a SBOMAttachment) (*SBOM, *Event, bool, error) {
	if err := c.authorize(ctx, actor, tlog.TypeSBOMAttached); err != nil {
		return nil, nil, false, err
	}
	if !ValidName(a.Name) || !ValidVersion(a.Version) {
		return nil, nil, false, fmt.Errorf("%w: name %q and version %q: give the name and version of a recorded artifact", ErrInvalid, trunc(a.Name), trunc(a.Version))
	}
	if len(a.Document) == 0 {
		return nil, nil, false, fmt.Errorf("%w: the SBOM document is empty", ErrInvalid)
	}
	env, err := parseEnvelope(a.Envelope)
	if err != nil {
		return nil, nil, false, err
	}
	st, err := attest.ParseStatement(env.Payload)
	if err != nil {
		return nil, nil, false, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	ref, err := st.SBOM()
	if err != nil {
		return nil, nil, false, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	unlock, err := c.lock(ctx, "sbom "+a.Name+"@"+a.Version)
	if err != nil {
		return nil, nil, false, err
	}
	defer unlock()
	rec, err := c.store.Artifact(ctx, a.Name, a.Version)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, nil, false, fmt.Errorf("%w: no artifact %s@%s: publish it first", ErrNotFound, a.Name, a.Version)
	case err != nil:
		return nil, nil, false, unavailable("look up artifact", err)
	case !rec.Entry.Logged():
		return nil, nil, false, fmt.Errorf("%w: artifact %s@%s is still being recorded; retry shortly", ErrNotFound, a.Name, a.Version)
	case a.AttachedBy != rec.Artifact.BuilderID:
		return nil, nil, false, fmt.Errorf("%w: %s@%s was published by %s, not %s", ErrNotBuilder, a.Name, a.Version, rec.Artifact.BuilderID, trunc(a.AttachedBy))
	case ref.ArtifactName != a.Name || ref.ArtifactDigest != rec.Artifact.Digest:
		return nil, nil, false, fmt.Errorf("%w: the SBOM statement is about %s (%s), not %s@%s (%s)", ErrInvalid,
			trunc(ref.ArtifactName), ref.ArtifactDigest, a.Name, a.Version, rec.Artifact.Digest)
	case !ref.Describes(a.Document):
		return nil, nil, false, fmt.Errorf("%w: the SBOM statement names document %s; the document sent is %s", ErrInvalid, ref.DocumentDigest, digest.Of(a.Document))
	}
	existing, err := c.store.SBOM(ctx, rec.ID, false)
	switch {
	case err == nil:
		if existing.DocumentDigest == ref.DocumentDigest {
			return existing, nil, false, nil
		}
		return nil, nil, false, fmt.Errorf("%w: %s@%s already has an SBOM (document %s, attached by %s); an artifact's SBOM is not replaced: publish a new version with the new SBOM",
			ErrAlreadyExists, a.Name, a.Version, existing.DocumentDigest, existing.AttachedBy)
	case !errors.Is(err, ErrNotFound):
		return nil, nil, false, unavailable("look up SBOM", err)
	}
	components, err := c.parser.ParseFormat(ctx, ref.Format, a.Document)
	if err != nil {
		if errors.Is(err, sbom.ErrInvalid) {
			return nil, nil, false, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		return nil, nil, false, err
	}
	sum := sha256.Sum256(a.Envelope)
	details, err := json.Marshal(sbomDetails{
		Name: a.Name, Version: a.Version, Digest: rec.Artifact.Digest, Format: ref.Format, Document: ref.DocumentDigest,
		Components: len(components), By: a.AttachedBy, EnvelopeSHA256: hex.EncodeToString(sum[:]),
	})
	if err != nil {
		return nil, nil, false, fmt.Errorf("encode details: %w", err)
	}
	ev, err := c.appendEvent(ctx, actor, tlog.TypeSBOMAttached, rec.Artifact.Digest, details, false)
	if err != nil {
		return nil, nil, false, err
	}
	b := &SBOM{
		ArtifactID: rec.ID, Artifact: rec.Artifact, Format: ref.Format, DocumentDigest: ref.DocumentDigest, Document: a.Document,
		Envelope: a.Envelope, KeyID: env.Signatures[0].KeyID, AttachedBy: a.AttachedBy, AttachedAt: ev.CreatedAt,
		LogIndex: ev.Entry.Index, Components: components,
	}
	if b.ID, err = c.store.InsertSBOM(ctx, b); err != nil {
		c.logger.WarnContext(ctx, "SBOM logged but not stored: a retry logs it again",
			slog.String("artifact", a.Name+"@"+a.Version), slog.Uint64("index", ev.Entry.Index), slog.Any("error", err))
		if errors.Is(err, ErrAlreadyExists) {
			// Another catalog process stored one meanwhile (the lock is
			// per process without a Locker).
			return nil, nil, false, fmt.Errorf("%w: %s@%s already has an SBOM", ErrAlreadyExists, a.Name, a.Version)
		}
		return nil, nil, false, unavailable("store SBOM", err)
	}
	b.Document = nil
	return b, ev, true, nil
}

// SBOMQuery names the artifact whose SBOM GetSBOM returns: Name and
// Version, or Digest.
type SBOMQuery struct {
	Name, Version, Digest string
	// WithDocument asks for the document too.
	WithDocument bool
}

// HasSBOM reports whether an SBOM is attached to rec, a record Artifact
// or ArtifactByDigest returned: whether GetSBOM by its name and version
// finds one.
func (c *Catalog) HasSBOM(ctx context.Context, rec *ArtifactRecord) (bool, error) {
	has, err := c.store.HasSBOM(ctx, rec.ID)
	if err != nil {
		return false, unavailable("look up SBOM", err)
	}
	return has, nil
}

// GetSBOM returns the SBOM attached to an artifact (by digest: the oldest
// attached to a logged artifact with that digest), or ErrNotFound.
func (c *Catalog) GetSBOM(ctx context.Context, q SBOMQuery) (*SBOM, error) {
	var (
		b   *SBOM
		err error
	)
	switch {
	case q.Digest != "" && q.Name == "" && q.Version == "":
		if !digest.Valid(q.Digest) {
			return nil, fmt.Errorf("%w: digest %q: want sha256:<64 lowercase hex>", ErrInvalid, trunc(q.Digest))
		}
		b, err = c.store.SBOMByDigest(ctx, q.Digest, q.WithDocument)
	case q.Digest == "" && ValidName(q.Name) && ValidVersion(q.Version):
		var rec *ArtifactRecord
		rec, err = c.store.Artifact(ctx, q.Name, q.Version)
		if err == nil && !rec.Entry.Logged() {
			err = fmt.Errorf("artifact %s@%s is still being recorded: %w", q.Name, q.Version, ErrNotFound)
		}
		if err == nil {
			b, err = c.store.SBOM(ctx, rec.ID, q.WithDocument)
		}
	default:
		return nil, fmt.Errorf("%w: give either a name and version, or a digest", ErrInvalid)
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("%w: no SBOM is attached to %s: attach one with custody sbom attach", ErrNotFound, q.what())
	case err != nil:
		return nil, unavailable("read SBOM", err)
	}
	if q.WithDocument && digest.Of(b.Document) != b.DocumentDigest {
		return nil, fmt.Errorf("%w: the stored SBOM document of %s does not hash to %s", ErrIntegrity, q.what(), b.DocumentDigest)
	}
	return b, nil
}

func (q SBOMQuery) what() string {
	if q.Digest != "" {
		return q.Digest
	}
	return q.Name + "@" + q.Version
}
