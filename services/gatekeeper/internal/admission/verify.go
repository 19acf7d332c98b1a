package admission

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/gatekeeper/internal/policy"
)

// Labels of the shared failure metrics.
const (
	kindEnvelope   = "envelope"
	kindCheckpoint = "checkpoint"
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

// verify checks an artifact's evidence: the envelope's signature by a
// published artifact key, that the signed statement is about this record,
// the log entry and its inclusion under a checkpoint signed by the log, and
// that the publisher still holds the bytes. Every failed check is a message
// in the result; an error means a dependency failed and no decision can be
// made.
func (g *Gate) verify(ctx context.Context, req Request, ev *Evidence) (policy.Verification, []string, error) {
	a := ev.Artifact
	// The publisher may re-hash a large blob: start it first.
	blob := make(chan error, 1)
	go func() { blob <- g.cfg.Publisher.VerifyBlob(ctx, a.Digest) }()

	c := &checks{g: g, ctx: ctx}
	c.ver.SubjectMatch = c.requestMatches(req, a)
	stmt, err := c.signature(ev.Envelope)
	if err != nil {
		<-blob
		return policy.Verification{}, nil, err
	}
	if stmt != nil {
		c.ver.SubjectMatch = c.statementMatches(stmt, a) && c.ver.SubjectMatch
	}
	c.log(ev)

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

// signature verifies the envelope with the signer's artifact keys and
// returns its statement, or nil if it does not verify. Errors mean the
// signer's keys could not be fetched.
func (c *checks) signature(envelope []byte) (*attest.Statement, error) {
	env, err := attest.ParseEnvelope(envelope)
	if err != nil {
		c.signatureFailure(kindEnvelope)
		c.fail("artifact envelope is malformed: %v", err)
		return nil, nil
	}
	keys, gen, err := c.g.keys.get(c.ctx)
	if err != nil {
		return nil, err
	}
	keyID, verr := env.Verify(keys, attest.PurposeArtifact)
	if errors.Is(verr, attest.ErrUnknownKey) {
		// The signer may have published the key since we last asked.
		fresh, freshGen, err := c.g.keys.refresh(c.ctx, gen)
		if err != nil {
			return nil, err
		}
		if freshGen != gen {
			keyID, verr = env.Verify(fresh, attest.PurposeArtifact)
		}
	}
	if err := verr; err != nil {
		c.signatureFailure(kindEnvelope)
		c.fail("artifact envelope signature does not verify against the signer's published artifact keys: %v", err)
		return nil, nil
	}
	stmt, err := attest.ParseStatement(env.Payload)
	if err != nil {
		c.signatureFailure(kindEnvelope)
		c.fail("artifact envelope is signed but its statement is malformed: %v", err)
		return nil, nil
	}
	c.ver.Signature = true
	c.pass("artifact envelope signed by artifact key %s", keyID)
	return stmt, nil
}

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

// log checks the checkpoint's signature, the inclusion of the leaf under it,
// and that the leaf logs this artifact and this envelope.
func (c *checks) log(ev *Evidence) {
	e := ev.Entry
	cp, err := tlog.OpenCheckpoint(e.Checkpoint, c.g.cfg.LogVerifierKey)
	if err != nil {
		if errors.Is(err, tlog.ErrUnknownKey) || errors.Is(err, tlog.ErrBadSignature) || errors.Is(err, tlog.ErrOriginMismatch) {
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
	entry, err := tlog.ParseEntry(e.Leaf)
	if err != nil {
		c.integrityFailure(whereLog)
		c.fail("log entry %d is malformed: %v", e.Index, err)
		entryOK = false
	} else {
		a := ev.Artifact
		sum := sha256.Sum256(ev.Envelope)
		envHash := hex.EncodeToString(sum[:])
		var problems []string
		if entry.Type != tlog.TypeArtifactPublished {
			problems = append(problems, fmt.Sprintf("log entry %d is of type %q, want %q", e.Index, entry.Type, tlog.TypeArtifactPublished))
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

func checkVerifierKey(key string) error {
	if key == "" {
		return errors.New("the log's note verifier key is required")
	}
	if _, err := note.NewVerifier(key); err != nil {
		return fmt.Errorf("log verifier key: want a note verifier key (<name>+<hash>+<key>): %w", err)
	}
	return nil
}
