package admission

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/services/gatekeeper/internal/policy"
)

// Labels of the shared failure metrics.
const (
	kindEnvelope   = "envelope"
	kindCheckpoint = "checkpoint"
	kindTrustRoot  = "trust_root"
	whereEvidence  = "evidence"
	whereLog       = "log"
	whereStore     = "store"
)

// checks collects the outcome of each verification step.
type checks struct {
	g      *Gate
	ctx    context.Context
	ver    policy.Verification
	passed []string
}

func (c *checks) fail(msg string, args ...any) {
	c.ver.Messages = append(c.ver.Messages, fmt.Sprintf(msg, args...))
}

func (c *checks) pass(msg string, args ...any) {
	c.passed = append(c.passed, fmt.Sprintf(msg, args...))
}

func (c *checks) signatureFailure(kind string) {
	c.g.cfg.Metrics.SignatureFailures.WithLabelValues(kind).Inc()
}

func (c *checks) integrityFailure(where string) {
	c.g.cfg.Metrics.IntegrityFailures.WithLabelValues(where).Inc()
}

// verify checks an artifact's evidence: the envelope's signature by an
// artifact key of the trust root, valid when the log recorded it, that the
// signed statement is about this record, the log entry and its inclusion
// under a checkpoint signed by the log key of the trust root, and that the
// publisher still holds the bytes. Every failed check is a message
// in the result; an error means a dependency failed and no decision can be
// made.
func (g *Gate) verify(ctx context.Context, req Request, ev *Evidence) (policy.Verification, []string, error) {
	a := ev.Artifact
	// The publisher may re-hash a large blob: start it first.
	blob := make(chan error, 1)
	go func() { blob <- g.cfg.Publisher.VerifyBlob(ctx, a.Digest) }()

	// Revocations and new roots take effect at once: ask the signer on
	// every admission (it must be up anyway to sign the decision). Keys
	// come only from roots that chain from the pinned one.
	if err := g.trust.sync(ctx); err != nil {
		<-blob
		return policy.Verification{}, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	c := &checks{g: g, ctx: ctx}
	c.ver.SubjectMatch = c.requestMatches(req, a)
	// The log assigned the entry's time: it is when the envelope was
	// signed, as far as key windows and revocations are concerned. It is
	// trusted only if the log checks below pass too.
	entry, entryErr := tlog.ParseEntry(ev.Entry.Leaf)
	stmt, root := c.signature(ev.Envelope, entry)
	if stmt != nil {
		c.ver.SubjectMatch = c.statementMatches(stmt, a) && c.ver.SubjectMatch
	}
	c.log(ev, root, entry, entryErr)

	switch err := <-blob; {
	case err == nil:
		c.ver.BlobIntegrity = true
		c.pass("publisher holds the bytes of %s intact", a.Digest)
	case errors.Is(err, ErrNotFound):
		c.integrityFailure(whereStore)
		c.fail("stored blob %s is missing from the publisher: the artifact cannot be served; restore it from backup", a.Digest)
	case errors.Is(err, ErrCorrupt):
		c.integrityFailure(whereStore)
		c.fail("stored blob %s no longer matches its digest (corrupted at rest): restore it from backup", a.Digest)
	default:
		return policy.Verification{}, nil, fmt.Errorf("%w: verify blob %s at the publisher: %w", ErrUnavailable, a.Digest, err)
	}
	return c.ver, c.passed, nil
}

// requestMatches checks that the catalog answered the question asked.
func (c *checks) requestMatches(req Request, a Artifact) bool {
	ok := true
	if req.Digest != "" && a.Digest != req.Digest {
		c.fail("catalog returned artifact %s for digest %s", a.Digest, req.Digest)
		ok = false
	}
	if req.Digest == "" && (a.Name != req.Name || a.Version != req.Version) {
		c.fail("catalog returned artifact %s@%s for %s@%s", a.Name, a.Version, req.Name, req.Version)
		ok = false
	}
	if !ok {
		c.integrityFailure(whereEvidence)
	}
	return ok
}

// signature verifies the envelope against the artifact keys of the current
// trust root and returns its statement, or nil if no signature is valid,
// and the root used (nil if it expired). A signature is valid if it
// verifies with an artifact key the root lists, the key was valid when the
// log recorded the entry, is not revoked (by the root or, live, by the
// signer), and signs the statement's channel.
func (c *checks) signature(envelope []byte, entry *tlog.Entry) (*attest.Statement, *trustroot.Root) {
	// verify synced with the signer just before: a newer root, if any, is
	// in use already.
	root, err := c.g.trust.current()
	if err != nil {
		c.signatureFailure(kindTrustRoot)
		c.fail("no usable trust root, so the gatekeeper denies every admission: %v", err)
		return nil, nil
	}
	env, err := attest.ParseEnvelope(envelope)
	if err != nil {
		c.signatureFailure(kindEnvelope)
		c.fail("artifact envelope is malformed: %v", err)
		return nil, root
	}
	var stmt *attest.Statement
	var problems []string
	keys := root.Keys(attest.PurposeArtifact)
	for _, s := range env.Signatures {
		one := attest.Envelope{PayloadType: env.PayloadType, Payload: env.Payload, Signatures: []attest.Signature{s}}
		keyID, err := one.Verify(keys, attest.PurposeArtifact)
		switch {
		case errors.Is(err, attest.ErrUnknownKey):
			problems = append(problems, fmt.Sprintf("key %s is not an artifact key in trust root v%d", trunc(s.KeyID), root.Version))
			continue
		case err != nil:
			problems = append(problems, fmt.Sprintf("the signature by key %s does not verify", s.KeyID))
			continue
		}
		if stmt == nil {
			if stmt, err = attest.ParseStatement(env.Payload); err != nil {
				c.signatureFailure(kindEnvelope)
				c.fail("artifact envelope is signed but its statement is malformed: %v", err)
				return nil, root
			}
		}
		if err := c.keyValid(root, keyID, entry, stmt); err != nil {
			problems = append(problems, err.Error())
			continue
		}
		c.ver.Signature = true
		c.pass("artifact envelope signed by artifact key %s, valid in trust root v%d when logged", keyID, root.Version)
		return stmt, root
	}
	c.signatureFailure(kindEnvelope)
	c.fail("artifact envelope signature does not verify against the artifact keys of trust root v%d: %s", root.Version, strings.Join(problems, "; "))
	return nil, root
}

// keyValid checks that key id, which signed stmt, was valid when the log
// recorded entry.
func (c *checks) keyValid(root *trustroot.Root, id string, entry *tlog.Entry, stmt *attest.Statement) error {
	if entry == nil {
		return fmt.Errorf("key %s signed, but the log entry is malformed, so when it signed is unknown", id)
	}
	at := entry.Time
	if err := root.CheckSignedAt(id, at); err != nil {
		return err
	}
	k, _ := root.SigningKey(id)
	revokedAt, by := k.RevokedAt, fmt.Sprintf("trust root v%d", root.Version)
	if live, ok := c.g.trust.revokedAt(id); ok && (revokedAt == nil || live.Before(*revokedAt)) {
		revokedAt, by = &live, "the signer"
	}
	name := fmt.Sprintf("key %s (%s v%d)", id, k.Name, k.Version)
	switch {
	case revokedAt == nil:
	case !at.Before(*revokedAt):
		return fmt.Errorf("%s was revoked at %s (per %s); the signature was logged at %s", name, stamp(*revokedAt), by, stamp(at))
	case !c.g.cfg.AcceptBeforeRevocation:
		return fmt.Errorf("%s was revoked at %s (per %s); its signatures are denied even when logged before that (this one at %s): have the artifact re-signed by a current key, or run the gatekeeper with --accept-before-revocation",
			name, stamp(*revokedAt), by, stamp(at))
	}
	if sa, err := stmt.Artifact(); err == nil {
		if err := root.ChannelError(k, sa.Channel); err != nil {
			return err
		}
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// statementMatches guards against mix-and-match: a valid envelope of
// another artifact, or a catalog record altered after signing (another
// channel or builder), must not pass.
func (c *checks) statementMatches(stmt *attest.Statement, a Artifact) bool {
	sa, err := stmt.Artifact()
	if err != nil {
		c.integrityFailure(whereEvidence)
		c.fail("signed statement does not describe an artifact: %v", err)
		return false
	}
	ok := true
	for _, f := range []struct{ what, signed, record string }{
		{"digest", sa.Digest, a.Digest},
		{"name", sa.Name, a.Name},
		{"version", sa.Version, a.Version},
		{"channel", sa.Channel, a.Channel},
		{"builder.id", sa.BuilderID, a.BuilderID},
		{"source repo", sa.SourceRepo, a.SourceRepo},
		{"source commit", sa.SourceCommit, a.SourceCommit},
	} {
		if f.signed != f.record {
			c.fail("envelope is for another artifact (mix-and-match): signed %s %q, catalog record has %q", f.what, trunc(f.signed), trunc(f.record))
			ok = false
		}
	}
	if !ok {
		c.integrityFailure(whereEvidence)
		return false
	}
	c.pass("signed statement matches the catalog record of %s@%s (%s)", a.Name, a.Version, a.Digest)
	return true
}

// log checks the checkpoint's signature by the log key the trust root
// lists for its origin, the inclusion of the leaf under it, and that the
// leaf (entry, or entryErr if it did not parse) logs this artifact and this
// envelope, as published or re-signed.
func (c *checks) log(ev *Evidence, root *trustroot.Root, entry *tlog.Entry, entryErr error) {
	e := ev.Entry
	cp, err := c.checkpoint(e.Checkpoint, root)
	if err != nil {
		if errors.Is(err, tlog.ErrUnknownKey) || errors.Is(err, tlog.ErrBadSignature) || errors.Is(err, tlog.ErrOriginMismatch) || errors.Is(err, errNoLogKey) {
			c.signatureFailure(kindCheckpoint)
		}
		c.fail("log checkpoint rejected: %v", err)
	} else {
		c.ver.Checkpoint = true
		c.pass("checkpoint of log %s at size %d signed by the log's key", cp.Origin, cp.Size)
	}

	included := false
	switch {
	case e.Index < 0:
		c.integrityFailure(whereLog)
		c.fail("log entry index %d is negative", e.Index)
	case cp == nil:
		// Without a trusted checkpoint there is nothing to prove inclusion
		// against; the checkpoint's message says why.
	default:
		if err := tlog.VerifyInclusion(e.Leaf, uint64(e.Index), e.Proof, cp); err != nil {
			c.integrityFailure(whereLog)
			c.fail("log inclusion proof rejected: %v", err)
		} else {
			included = true
		}
	}

	entryOK := true
	if entryErr != nil {
		c.integrityFailure(whereLog)
		c.fail("log entry %d is malformed: %v", e.Index, entryErr)
		entryOK = false
	} else {
		a := ev.Artifact
		sum := sha256.Sum256(ev.Envelope)
		envHash := hex.EncodeToString(sum[:])
		var problems []string
		if entry.Type != tlog.TypeArtifactPublished && entry.Type != tlog.TypeArtifactResigned {
			problems = append(problems, fmt.Sprintf("log entry %d is of type %q, want %q or %q", e.Index, trunc(entry.Type), tlog.TypeArtifactPublished, tlog.TypeArtifactResigned))
		}
		if s := entry.Subject; s.Name != a.Name || s.Version != a.Version || s.Digest != a.Digest {
			problems = append(problems, fmt.Sprintf("log entry %d is for %s@%s (%s), not %s@%s (%s)", e.Index,
				trunc(s.Name), trunc(s.Version), s.Digest, a.Name, a.Version, a.Digest))
		}
		if entry.EnvelopeSHA256 != envHash {
			problems = append(problems, fmt.Sprintf("log entry %d records envelope sha256 %q, but the envelope presented hashes to %s: it is not the envelope that was logged", e.Index, entry.EnvelopeSHA256, envHash))
		}
		if len(problems) > 0 {
			c.integrityFailure(whereEvidence)
			c.ver.Messages = append(c.ver.Messages, problems...)
			entryOK = false
		}
	}
	c.ver.LogInclusion = included && entryOK
	if c.ver.LogInclusion {
		c.pass("envelope logged as entry %d, included in the checkpoint", e.Index)
	}
}

// checkpoint opens a checkpoint with the key root lists for its origin.
// Errors wrap the tlog errors, or errNoLogKey.
func (c *checks) checkpoint(signed []byte, root *trustroot.Root) (*tlog.Checkpoint, error) {
	if root == nil {
		return nil, errors.New("no usable trust root to take the log's key from")
	}
	origin, _, _ := strings.Cut(string(signed[:min(len(signed), maxOriginLen)]), "\n")
	key, ok := root.LogVerifier(origin)
	if !ok {
		return nil, fmt.Errorf("%w: trust root v%d lists no key for log %q", errNoLogKey, root.Version, trunc(origin))
	}
	return tlog.OpenCosigned(signed, origin, key)
}

// maxOriginLen bounds the origin line read before the checkpoint is
// verified.
const maxOriginLen = 1024

var errNoLogKey = errors.New("unknown log")
