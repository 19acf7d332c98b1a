// Package evidence verifies what the catalog says about an artifact — DSSE
// envelope, provenance subject, log entry, checkpoint and inclusion proof —
// on the client, against pinned public keys.
package evidence

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/tlog"
)

// ErrVerification wraps every reason evidence is rejected.
var ErrVerification = errors.New("verification failed")

// PublicKey is a signer public key as pinned in trust files and bundles.
type PublicKey struct {
	KeyID        string `json:"key_id"`
	Purpose      string `json:"purpose"`
	Algorithm    string `json:"algorithm"`
	PublicKeyDER []byte `json:"public_key_der"`
}

// Keys is the public trust needed to verify evidence.
type Keys struct {
	Signer       []PublicKey `json:"signer_keys"`
	LogPublicKey string      `json:"log_public_key"`
}

// KeysFromProto converts the signer's ListPublicKeys answer.
func KeysFromProto(resp *signerv1.ListPublicKeysResponse, logKey string) Keys {
	k := Keys{LogPublicKey: logKey}
	for _, pk := range resp.GetKeys() {
		purpose := ""
		switch pk.GetPurpose() {
		case signerv1.KeyPurpose_KEY_PURPOSE_ARTIFACT:
			purpose = attest.PurposeArtifact
		case signerv1.KeyPurpose_KEY_PURPOSE_DECISION:
			purpose = attest.PurposeDecision
		}
		k.Signer = append(k.Signer, PublicKey{KeyID: pk.GetKeyId(), Purpose: purpose, Algorithm: pk.GetAlgorithm(), PublicKeyDER: pk.GetPublicKeyDer()})
	}
	return k
}

func (k Keys) attest() ([]attest.Key, error) {
	var out []attest.Key
	for _, pk := range k.Signer {
		pub, alg, err := attest.ParsePublicKey(pk.PublicKeyDER)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", pk.KeyID, err)
		}
		id, err := attest.KeyID(pub)
		if err != nil || id != pk.KeyID {
			return nil, fmt.Errorf("key %s: its id does not match its public key", pk.KeyID)
		}
		out = append(out, attest.Key{ID: pk.KeyID, Purpose: pk.Purpose, Algorithm: alg, Public: pub})
	}
	return out, nil
}

// PinnedTo checks that every key in k is also in pinned, byte for byte.
func (k Keys) PinnedTo(pinned Keys) error {
	for _, pk := range k.Signer {
		found := false
		for _, p := range pinned.Signer {
			if p.KeyID == pk.KeyID && p.Purpose == pk.Purpose && string(p.PublicKeyDER) == string(pk.PublicKeyDER) {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%w: signer key %s is not in the pinned trust", ErrVerification, pk.KeyID)
		}
	}
	if k.LogPublicKey != pinned.LogPublicKey {
		return fmt.Errorf("%w: the log key is not the pinned one", ErrVerification)
	}
	return nil
}

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

// Verify checks the envelope signature with an artifact key of keys, that
// the signed statement is about this artifact, that the log entry records
// this artifact and envelope, that the checkpoint is signed by the log key,
// and that the entry is included in it.
func Verify(ev Evidence, keys Keys) error {
	a := ev.Artifact
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w for %s@%s (%s): %s", ErrVerification, a.Name, a.Version, a.Digest, fmt.Sprintf(format, args...))
	}
	ak, err := keys.attest()
	if err != nil {
		return fail("%v", err)
	}
	env, err := attest.ParseEnvelope(ev.Envelope)
	if err != nil {
		return fail("%v", err)
	}
	if _, err := env.Verify(ak, attest.PurposeArtifact); err != nil {
		return fail("envelope: %v", err)
	}
	st, err := attest.ParseStatement(env.Payload)
	if err != nil {
		return fail("%v", err)
	}
	signed, err := st.Artifact()
	if err != nil {
		return fail("%v", err)
	}
	if signed.Digest != a.Digest || signed.Name != a.Name || signed.Version != a.Version || signed.Channel != a.Channel || signed.BuilderID != a.BuilderID {
		return fail("the signed statement is about %s@%s (%s, channel %s, builder %s), not this artifact", signed.Name, signed.Version, signed.Digest, signed.Channel, signed.BuilderID)
	}
	entry, err := tlog.ParseEntry(ev.Entry.Leaf)
	if err != nil {
		return fail("log entry: %v", err)
	}
	sum := sha256.Sum256(ev.Envelope)
	if entry.Type != tlog.TypeArtifactPublished || entry.Subject.Digest != a.Digest || entry.Subject.Name != a.Name ||
		entry.Subject.Version != a.Version || entry.EnvelopeSHA256 != hex.EncodeToString(sum[:]) {
		return fail("the log entry records another artifact or envelope")
	}
	cp, err := tlog.OpenCheckpoint(ev.Entry.Checkpoint, keys.LogPublicKey)
	if err != nil {
		return fail("checkpoint: %v", err)
	}
	if ev.Entry.Index < 0 {
		return fail("negative log index")
	}
	if err := tlog.VerifyInclusion(ev.Entry.Leaf, uint64(ev.Entry.Index), ev.Entry.InclusionProof, cp); err != nil {
		return fail("inclusion proof: %v", err)
	}
	return nil
}
