// Package verify is Custody's one verifier of an artifact's evidence: the
// gatekeeper and the custody command both check signatures, key windows,
// revocations, channels, subjects, log entries, co-signed checkpoints and
// inclusion proofs with it.
package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
)

// ErrVerification wraps every error Result.Err and Entry return.
var ErrVerification = errors.New("verification failed")

// Artifact is the catalog's record of an artifact. None of it is trusted
// until Check matches it with the signed statement. The JSON names are the
// offline bundle's.
type Artifact struct {
	Name         string `json:"name"`
	Version      string `json:"version"`
	Digest       string `json:"digest"`
	Size         int64  `json:"size"`
	Channel      string `json:"channel"`
	BuilderID    string `json:"builder_id"`
	SourceRepo   string `json:"source_repo,omitempty"`
	SourceCommit string `json:"source_commit,omitempty"`
}

// LogEntry is a log entry as the catalog served it, with the proof that
// its checkpoint includes it.
type LogEntry struct {
	Index          int64    `json:"index"`
	Leaf           []byte   `json:"leaf"`
	InclusionProof [][]byte `json:"inclusion_proof"`
	Checkpoint     []byte   `json:"checkpoint"`
}

// Evidence is everything needed to verify an artifact except its bytes.
type Evidence struct {
	Artifact Artifact `json:"artifact"`
	Envelope []byte   `json:"envelope"`
	Entry    LogEntry `json:"log_entry"`
}

// FromProto converts the catalog's GetArtifact answer.
func FromProto(resp *catalogv1.GetArtifactResponse) Evidence {
	a := resp.GetArtifact()
	return Evidence{
		Artifact: Artifact{Name: a.GetName(), Version: a.GetVersion(), Digest: a.GetDigest(), Size: a.GetSize(),
			Channel: a.GetChannel(), BuilderID: a.GetBuilderId(), SourceRepo: a.GetSourceRepo(), SourceCommit: a.GetSourceCommit()},
		Envelope: resp.GetEnvelope(),
		Entry:    EntryFromProto(resp.GetEntry()),
	}
}

// EntryFromProto converts one log entry of a catalog answer.
func EntryFromProto(e *catalogv1.LogEntry) LogEntry {
	return LogEntry{Index: e.GetIndex(), Leaf: e.GetLeaf(), InclusionProof: e.GetInclusionProof(), Checkpoint: e.GetCheckpoint()}
}

// Step is one check of Check.
type Step string

// The steps, in the order Check reports them.
const (
	// StepRequest: the evidence is about the artifact the caller asked
	// for (Options.Want).
	StepRequest Step = "request"
	// StepSignature: a signature of the envelope verifies with an
	// artifact key of the trust root that was valid when the log recorded
	// the entry, is not revoked, and signs the statement's channel.
	StepSignature Step = "signature"
	// StepSubject: the signed statement is about this record: digest,
	// name, version, channel, builder, source repository and commit.
	StepSubject Step = "subject"
	// StepCheckpoint: the checkpoint is co-signed by the key the trust
	// root lists for its log.
	StepCheckpoint Step = "checkpoint"
	// StepInclusion: the leaf is included in the checkpoint's tree at the
	// entry's index.
	StepInclusion Step = "inclusion"
	// StepEntry: the log entry records this artifact and this envelope,
	// as published or re-signed.
	StepEntry Step = "entry"
)

// Steps are every step, in order.
var Steps = []Step{StepRequest, StepSignature, StepSubject, StepCheckpoint, StepInclusion, StepEntry}

// Failure is one failed step with its reason. It unwraps to the cause
// where there is one (tlog's and attest's sentinels, trustroot's).
type Failure struct {
	Step   Step
	Reason string
	cause  error
}

func (f Failure) Error() string { return f.Reason }

// Unwrap returns the cause, or nil.
func (f Failure) Unwrap() error { return f.cause }

// Want is what the caller asked the catalog for; every field that is set
// must be the record's.
type Want struct {
	Name, Version, Digest string
}

// Options adjust Check. The zero value is the strictest.
type Options struct {
	// Want, if set, is checked against the record (StepRequest).
	Want Want
	// Revoked, if set, reports revocations known beyond the trust root
	// (the signer's live answer); they can only narrow trust. RevokedBy
	// names their source in reasons.
	Revoked   func(keyID string) (time.Time, bool)
	RevokedBy string
	// AcceptBeforeRevocation lets a signature by a revoked key version
	// stand if it was logged before the revocation. By default every
	// signature of a revoked version is refused.
	AcceptBeforeRevocation bool
	// Cache, if set, remembers what the signature step derives from an
	// envelope's bytes alone (see Cache); every other check still runs.
	Cache *Cache
}

// Result is what Check established. Entry and Checkpoint are set when they
// parsed or verified even if other steps failed: they are trusted only if
// Err is nil.
type Result struct {
	Artifact Artifact
	// KeyID is the artifact key whose signature verified; "" if none.
	KeyID string
	// Statement is the verified statement; nil unless StepSignature passed.
	Statement *attest.Artifact
	// Entry is the parsed log entry; nil if it did not parse.
	Entry *tlog.Entry
	// Checkpoint is the verified checkpoint; nil if it did not verify.
	Checkpoint *tlog.Checkpoint
	// Confirmed says, one line per step that passed, what was confirmed.
	Confirmed []string
	// Failures are every failed step, in Steps order, one reason each.
	Failures []Failure

	ok map[Step]bool
}

// OK reports whether step passed.
func (r *Result) OK(step Step) bool { return r.ok[step] }

// Err returns nil if every step passed, or an error wrapping
// ErrVerification that names the artifact and gives every reason.
func (r *Result) Err() error {
	if len(r.Failures) == 0 {
		return nil
	}
	reasons := make([]string, len(r.Failures))
	for i, f := range r.Failures {
		reasons[i] = f.Reason
	}
	a := r.Artifact
	return fmt.Errorf("%w for %s@%s (%s): %s", ErrVerification, quote.Prefix(a.Name), quote.Prefix(a.Version), quoteDigest(a.Digest), strings.Join(reasons, "; "))
}

func (r *Result) pass(step Step, format string, args ...any) {
	r.ok[step] = true
	r.Confirmed = append(r.Confirmed, fmt.Sprintf(format, args...))
}

func (r *Result) fail(step Step, cause error, format string, args ...any) {
	r.Failures = append(r.Failures, Failure{Step: step, Reason: fmt.Sprintf(format, args...), cause: cause})
}

// Check runs every step on ev against root, a trust root the caller
// accepted (pinned, or walked forward from the pinned one, and unexpired),
// and returns the outcome of each. A nil root fails every step that needs
// one. The log assigned the entry's time: it is when the envelope was
// signed as far as key windows and revocations go, and it is trusted only
// because the log steps must pass too. Check does no I/O and is safe for
// concurrent use if o.Revoked is.
func Check(ev Evidence, root *trustroot.Root, o Options) *Result {
	r := &Result{Artifact: ev.Artifact, ok: map[Step]bool{}}
	r.request(o.Want)
	entry, entryErr := tlog.ParseEntry(ev.Entry.Leaf)
	if entryErr == nil {
		r.Entry = entry
	}
	if r.signature(ev.Envelope, root, entry, o) {
		r.subject()
	}
	r.log(ev, root, entry, entryErr, o.Cache)
	return r
}

// request checks that the catalog answered the question asked.
func (r *Result) request(w Want) {
	a := r.Artifact
	var asked []string
	if (w.Name != "" && a.Name != w.Name) || (w.Version != "" && a.Version != w.Version) {
		asked = append(asked, fmt.Sprintf("%s@%s", quote.Prefix(w.Name), quote.Prefix(w.Version)))
	}
	if w.Digest != "" && a.Digest != w.Digest {
		asked = append(asked, "digest "+quoteDigest(w.Digest))
	}
	if len(asked) > 0 {
		r.fail(StepRequest, nil, "catalog returned artifact %s@%s (%s) for %s", quote.Prefix(a.Name), quote.Prefix(a.Version), quoteDigest(a.Digest), strings.Join(asked, " and "))
		return
	}
	r.ok[StepRequest] = true
}

// quoteDigest is quote.Prefix with room for a whole digest.
func quoteDigest(d string) string { return quote.Clip(d, len("sha256:")+64) }

// signature verifies the envelope against the artifact keys of root and
// sets the statement of the first signature that counts.
func (r *Result) signature(envelope []byte, root *trustroot.Root, entry *tlog.Entry, o Options) bool {
	if root == nil {
		r.fail(StepSignature, nil, "no usable trust root to take the artifact keys from")
		return false
	}
	var (
		env  *attest.Envelope
		memo *envelopeMemo
		err  error
	)
	if o.Cache != nil {
		memo, err = o.Cache.envelope(sha256.Sum256(envelope), envelope)
		if memo != nil {
			env = memo.env
		}
	} else {
		env, err = attest.ParseEnvelope(envelope)
	}
	if err != nil {
		r.fail(StepSignature, err, "artifact envelope is malformed: %v", err)
		return false
	}
	var stmt *attest.Artifact
	var problems []string
	keys := root.Keys(attest.PurposeArtifact)
	for i, s := range env.Signatures {
		keyID, err := r.verifySignature(env, i, keys, o.Cache, memo)
		switch {
		case errors.Is(err, attest.ErrUnknownKey):
			problems = append(problems, fmt.Sprintf("key %s is not an artifact key in trust root v%d", quote.Prefix(s.KeyID), root.Version))
			continue
		case err != nil:
			problems = append(problems, fmt.Sprintf("the signature by key %s does not verify", quote.Prefix(s.KeyID)))
			continue
		}
		// Only a signed payload is parsed.
		if stmt == nil {
			if stmt, err = statementOf(env, o.Cache, memo); err != nil {
				r.fail(StepSignature, err, "artifact envelope is signed but its statement is malformed: %v", err)
				return false
			}
		}
		if err := keyValid(root, keyID, entry, stmt.Channel, o); err != nil {
			problems = append(problems, err.Error())
			continue
		}
		r.KeyID, r.Statement = keyID, stmt
		r.pass(StepSignature, "artifact envelope signed by artifact key %s, valid in trust root v%d when logged", keyID, root.Version)
		return true
	}
	r.fail(StepSignature, attest.ErrBadSignature, "artifact envelope signature does not verify against the artifact keys of trust root v%d: %s", root.Version, strings.Join(problems, "; "))
	return false
}

// verifySignature verifies signature i of env against keys, as
// attest.Envelope.Verify does for that one signature, answering from
// cache if it verified under the same public key before.
func (r *Result) verifySignature(env *attest.Envelope, i int, keys []attest.Key, cache *Cache, memo *envelopeMemo) (string, error) {
	s := env.Signatures[i]
	k := slices.IndexFunc(keys, func(k attest.Key) bool { return k.ID == s.KeyID && k.Purpose == attest.PurposeArtifact })
	if memo != nil && k >= 0 && cache.verified(memo, i, keys[k]) {
		return keys[k].ID, nil
	}
	one := attest.Envelope{PayloadType: env.PayloadType, Payload: env.Payload, Signatures: []attest.Signature{s}}
	keyID, err := one.Verify(keys, attest.PurposeArtifact)
	if err == nil && memo != nil && k >= 0 {
		cache.markVerified(memo, i, keys[k])
	}
	return keyID, err
}

// statementOf parses env's statement, or takes it from cache; the caller
// gets its own copy of the struct.
func statementOf(env *attest.Envelope, cache *Cache, memo *envelopeMemo) (*attest.Artifact, error) {
	if memo == nil {
		return signedArtifact(env.Payload)
	}
	stmt := cache.statement(memo)
	if stmt == nil {
		var err error
		if stmt, err = signedArtifact(env.Payload); err != nil {
			return nil, err
		}
		cache.setStatement(memo, stmt)
	}
	c := *stmt
	return &c, nil
}

func signedArtifact(payload []byte) (*attest.Artifact, error) {
	st, err := attest.ParseStatement(payload)
	if err != nil {
		return nil, err
	}
	return st.Artifact()
}

// keyValid checks that key id was valid for channel when the log recorded
// entry.
func keyValid(root *trustroot.Root, id string, entry *tlog.Entry, channel string, o Options) error {
	if entry == nil {
		return fmt.Errorf("key %s signed, but the log entry is malformed, so when it signed is unknown", id)
	}
	at := entry.Time
	if err := root.CheckSignedAt(id, at); err != nil {
		return err
	}
	k, _ := root.SigningKey(id)
	revokedAt, by := k.RevokedAt, fmt.Sprintf("trust root v%d", root.Version)
	if o.Revoked != nil {
		if live, ok := o.Revoked(id); ok && (revokedAt == nil || live.Before(*revokedAt)) {
			revokedAt, by = &live, o.RevokedBy
		}
	}
	name := fmt.Sprintf("key %s (%s v%d)", id, k.Name, k.Version)
	switch {
	case revokedAt == nil:
	case !at.Before(*revokedAt):
		return fmt.Errorf("%w: %s was revoked at %s (per %s); the signature was logged at %s", trustroot.ErrKeyNotValid, name, stamp(*revokedAt), by, stamp(at))
	case !o.AcceptBeforeRevocation:
		return fmt.Errorf("%w: %s was revoked at %s (per %s); its signatures are denied even when logged before that (this one at %s): have the artifact re-signed by a current key",
			trustroot.ErrKeyNotValid, name, stamp(*revokedAt), by, stamp(at))
	}
	return root.ChannelError(k, channel)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// subject guards against mix-and-match: a valid envelope of another
// artifact, or a record altered after signing (another channel, builder or
// source), must not pass.
func (r *Result) subject() {
	sa, a := r.Statement, r.Artifact
	var problems []string
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
			// Clipped like a digest: names and versions are shorter still.
			problems = append(problems, fmt.Sprintf("signed %s %q, catalog record has %q", f.what, quoteDigest(f.signed), quoteDigest(f.record)))
		}
	}
	if len(problems) > 0 {
		r.fail(StepSubject, nil, "envelope is for another artifact (mix-and-match): %s", strings.Join(problems, "; "))
		return
	}
	r.pass(StepSubject, "signed statement matches the catalog record of %s@%s (%s)", a.Name, a.Version, a.Digest)
}

// log checks the checkpoint, the inclusion of the leaf under it, and that
// the leaf (entry, or entryErr if it did not parse) logs this artifact and
// this envelope. The checkpoint is opened through cache if there is one.
func (r *Result) log(ev Evidence, root *trustroot.Root, entry *tlog.Entry, entryErr error, cache *Cache) {
	e := ev.Entry
	cp, err := openCheckpoint(e.Checkpoint, root, cache)
	if err != nil {
		r.fail(StepCheckpoint, err, "log checkpoint rejected: %v", err)
	} else {
		r.Checkpoint = cp
		r.pass(StepCheckpoint, "checkpoint of log %s at size %d signed by the log's key", cp.Origin, cp.Size)
	}

	switch {
	case e.Index < 0:
		r.fail(StepInclusion, tlog.ErrMalformedProof, "log entry index %d is negative", e.Index)
	case cp == nil:
		// Nothing to prove inclusion against; the checkpoint's reason says
		// why. Inclusion is not established.
	default:
		if err := tlog.VerifyInclusion(e.Leaf, uint64(e.Index), e.InclusionProof, cp); err != nil {
			r.fail(StepInclusion, err, "log inclusion proof rejected: %v", err)
		} else {
			r.ok[StepInclusion] = true
		}
	}

	if entryErr != nil {
		r.fail(StepEntry, entryErr, "log entry %d is malformed: %v", e.Index, entryErr)
		return
	}
	a := ev.Artifact
	sum := sha256.Sum256(ev.Envelope)
	envHash := hex.EncodeToString(sum[:])
	var problems []string
	if entry.Type != tlog.TypeArtifactPublished && entry.Type != tlog.TypeArtifactResigned {
		problems = append(problems, fmt.Sprintf("is of type %q, want %q or %q", quote.Prefix(entry.Type), tlog.TypeArtifactPublished, tlog.TypeArtifactResigned))
	}
	if s := entry.Subject; s.Name != a.Name || s.Version != a.Version || s.Digest != a.Digest {
		problems = append(problems, fmt.Sprintf("is for %s@%s (%s), not %s@%s (%s)",
			quote.Prefix(s.Name), quote.Prefix(s.Version), s.Digest, quote.Prefix(a.Name), quote.Prefix(a.Version), quoteDigest(a.Digest)))
	}
	if entry.EnvelopeSHA256 != envHash {
		problems = append(problems, fmt.Sprintf("records envelope sha256 %q, but the envelope presented hashes to %s: it is not the envelope that was logged", quote.Prefix(entry.EnvelopeSHA256), envHash))
	}
	if len(problems) > 0 {
		r.fail(StepEntry, nil, "log entry %d %s", e.Index, strings.Join(problems, "; "))
		return
	}
	r.ok[StepEntry] = true
	if r.ok[StepInclusion] {
		r.Confirmed = append(r.Confirmed, fmt.Sprintf("envelope logged as entry %d, included in the checkpoint", e.Index))
	}
}

// ErrNoLogKey means the trust root lists no key for a checkpoint's log.
var ErrNoLogKey = errors.New("unknown log")

// maxOriginLen bounds the origin line read before the checkpoint is
// verified.
const maxOriginLen = 1024

// OpenCheckpoint opens a checkpoint with the key root lists for its
// origin (tlog.OpenCosigned): the one way every verifier opens the log's
// checkpoints, an entry's as the gatekeeper's log head. Errors wrap tlog's
// errors or ErrNoLogKey.
func OpenCheckpoint(signed []byte, root *trustroot.Root) (*tlog.Checkpoint, error) {
	return openCheckpoint(signed, root, nil)
}

// openCheckpoint is OpenCheckpoint, the opening itself answered by cache
// (if not nil) for bytes that opened under the same key before.
func openCheckpoint(signed []byte, root *trustroot.Root, cache *Cache) (*tlog.Checkpoint, error) {
	if root == nil {
		return nil, errors.New("no usable trust root to take the log's key from")
	}
	origin, _, _ := strings.Cut(string(signed[:min(len(signed), maxOriginLen)]), "\n")
	key, ok := root.LogVerifier(origin)
	if !ok {
		return nil, fmt.Errorf("%w: trust root v%d lists no key for log %q", ErrNoLogKey, root.Version, quote.Prefix(origin))
	}
	if cache != nil {
		return cache.openCheckpoint(signed, origin, key)
	}
	return tlog.OpenCosigned(signed, origin, key)
}

// Entry checks one log entry as the catalog served it: that its checkpoint
// is co-signed by the key root lists for its log, and that the leaf is
// included in that checkpoint's tree at the entry's index. It returns the
// parsed entry and the verified checkpoint; what the entry must be about is
// the caller's to check. Errors wrap ErrVerification and name the index.
func Entry(e LogEntry, root *trustroot.Root) (*tlog.Entry, *tlog.Checkpoint, error) {
	entry, err := tlog.ParseEntry(e.Leaf)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: log entry %d: %v", ErrVerification, e.Index, err)
	}
	cp, err := OpenCheckpoint(e.Checkpoint, root)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: log entry %d: checkpoint: %v", ErrVerification, e.Index, err)
	}
	if e.Index < 0 {
		return nil, nil, fmt.Errorf("%w: log entry %d: negative log index", ErrVerification, e.Index)
	}
	if err := tlog.VerifyInclusion(e.Leaf, uint64(e.Index), e.InclusionProof, cp); err != nil {
		return nil, nil, fmt.Errorf("%w: log entry %d: inclusion proof: %v", ErrVerification, e.Index, err)
	}
	return entry, cp, nil
}
