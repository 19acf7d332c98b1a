// Package evidence verifies what the catalog says about an artifact — DSSE
// envelope, provenance subject, log entry, checkpoint and inclusion proof —
// on the client, against a signed trust root.
package evidence

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
)

// ErrVerification wraps every reason evidence is rejected.
var ErrVerification = errors.New("verification failed")

// Artifact is the catalog's record of an artifact.
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

// LogEntry is the artifact's log entry with its proof.
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
	a, e := resp.GetArtifact(), resp.GetEntry()
	return Evidence{
		Artifact: Artifact{Name: a.GetName(), Version: a.GetVersion(), Digest: a.GetDigest(), Size: a.GetSize(),
			Channel: a.GetChannel(), BuilderID: a.GetBuilderId(), SourceRepo: a.GetSourceRepo(), SourceCommit: a.GetSourceCommit()},
		Envelope: resp.GetEnvelope(),
		Entry:    LogEntry{Index: e.GetIndex(), Leaf: e.GetLeaf(), InclusionProof: e.GetInclusionProof(), Checkpoint: e.GetCheckpoint()},
	}
}

// Verify checks the evidence against root, a trust root the caller
// accepted: an envelope signature by an artifact key root lists, valid when
// the log recorded the entry (the entry's time), not revoked, and signing
// the artifact's channel; that the signed statement is about this artifact;
// that the log entry records this artifact and envelope (published or
// re-signed); that the checkpoint is signed by the key root lists for its
// log; and that the entry is included in it. A signature by a revoked key
// version is refused even if logged before the revocation: have the
// artifact re-signed. Errors wrap ErrVerification.
func Verify(ev Evidence, root *trustroot.Root) error {
	_, err := Check(ev, root)
	return err
}

// Verified is what Check established about an artifact.
type Verified struct {
	// KeyID is the artifact key whose signature verified.
	KeyID string
	// Entry is the artifact's log entry (published or re-signed).
	Entry *tlog.Entry
	// Statement is what the verified envelope says: the provenance.
	Statement attest.Artifact
}

// Check is Verify, and returns the key that signed and the log entry.
func Check(ev Evidence, root *trustroot.Root) (*Verified, error) {
	a := ev.Artifact
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w for %s@%s (%s): %s", ErrVerification, a.Name, a.Version, a.Digest, fmt.Sprintf(format, args...))
	}
	env, err := attest.ParseEnvelope(ev.Envelope)
	if err != nil {
		return nil, fail("%v", err)
	}
	st, err := attest.ParseStatement(env.Payload)
	if err != nil {
		return nil, fail("%v", err)
	}
	signed, err := st.Artifact()
	if err != nil {
		return nil, fail("%v", err)
	}
	entry, err := tlog.ParseEntry(ev.Entry.Leaf)
	if err != nil {
		return nil, fail("log entry: %v", err)
	}
	keyID, err := signedBy(env, root, entry.Time, signed.Channel)
	if err != nil {
		return nil, fail("envelope: %v", err)
	}
	if signed.Digest != a.Digest || signed.Name != a.Name || signed.Version != a.Version || signed.Channel != a.Channel || signed.BuilderID != a.BuilderID {
		return nil, fail("the signed statement is about %s@%s (%s, channel %s, builder %s), not this artifact", signed.Name, signed.Version, signed.Digest, signed.Channel, signed.BuilderID)
	}
	sum := sha256.Sum256(ev.Envelope)
	if (entry.Type != tlog.TypeArtifactPublished && entry.Type != tlog.TypeArtifactResigned) || entry.Subject.Digest != a.Digest ||
		entry.Subject.Name != a.Name || entry.Subject.Version != a.Version || entry.EnvelopeSHA256 != hex.EncodeToString(sum[:]) {
		return nil, fail("the log entry records another artifact or envelope")
	}
	if _, err := proveIncluded(ev.Entry, root); err != nil {
		return nil, fail("%v", err)
	}
	return &Verified{KeyID: keyID, Entry: entry, Statement: *signed}, nil
}

// VerifyEntry checks one log entry as the catalog served it: that its
// checkpoint is co-signed by the key root lists for its log, and that the
// leaf is included in that checkpoint's tree at the entry's index. It
// returns the parsed entry and the verified checkpoint; what the entry must
// be about is the caller's to check. Errors wrap ErrVerification and name
// the log index.
func VerifyEntry(e LogEntry, root *trustroot.Root) (*tlog.Entry, *tlog.Checkpoint, error) {
	entry, err := tlog.ParseEntry(e.Leaf)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: log entry %d: %v", ErrVerification, e.Index, err)
	}
	cp, err := proveIncluded(e, root)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: log entry %d: %v", ErrVerification, e.Index, err)
	}
	return entry, cp, nil
}

// proveIncluded checks e's checkpoint against root's log key and e's
// inclusion proof against the checkpoint.
func proveIncluded(e LogEntry, root *trustroot.Root) (*tlog.Checkpoint, error) {
	origin, _, _ := strings.Cut(string(e.Checkpoint[:min(len(e.Checkpoint), 1024)]), "\n")
	logKey, ok := root.LogVerifier(origin)
	if !ok {
		return nil, fmt.Errorf("checkpoint: trust root v%d lists no key for log %q", root.Version, origin)
	}
	cp, err := tlog.OpenCosigned(e.Checkpoint, origin, logKey)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %v", err)
	}
	if e.Index < 0 {
		return nil, errors.New("negative log index")
	}
	if err := tlog.VerifyInclusion(e.Leaf, uint64(e.Index), e.InclusionProof, cp); err != nil {
		return nil, fmt.Errorf("inclusion proof: %v", err)
	}
	return cp, nil
}

// EntryFromProto converts one log entry of a catalog answer.
func EntryFromProto(e *catalogv1.LogEntry) LogEntry {
	return LogEntry{Index: e.GetIndex(), Leaf: e.GetLeaf(), InclusionProof: e.GetInclusionProof(), Checkpoint: e.GetCheckpoint()}
}

// signedBy returns the key of the first signature that verifies with an
// artifact key of root and was valid at time at for channel.
func signedBy(env *attest.Envelope, root *trustroot.Root, at time.Time, channel string) (string, error) {
	keys := root.Keys(attest.PurposeArtifact)
	var problems []string
	for _, s := range env.Signatures {
		one := attest.Envelope{PayloadType: env.PayloadType, Payload: env.Payload, Signatures: []attest.Signature{s}}
		id, err := one.Verify(keys, attest.PurposeArtifact)
		if errors.Is(err, attest.ErrUnknownKey) {
			problems = append(problems, fmt.Sprintf("key %s is not an artifact key in trust root v%d", s.KeyID, root.Version))
			continue
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("the signature by key %s does not verify", s.KeyID))
			continue
		}
		if err := root.CheckSignedAt(id, at); err != nil {
			problems = append(problems, err.Error())
			continue
		}
		k, _ := root.SigningKey(id)
		if k.RevokedAt != nil {
			problems = append(problems, fmt.Sprintf("key %s (%s v%d) was revoked at %s; its signatures are refused even when logged before that: have the artifact re-signed",
				id, k.Name, k.Version, k.RevokedAt.UTC().Format(time.RFC3339)))
			continue
		}
		if err := root.ChannelError(k, channel); err != nil {
			problems = append(problems, err.Error())
			continue
		}
		return id, nil
	}
	return "", errors.New(strings.Join(problems, "; "))
}
