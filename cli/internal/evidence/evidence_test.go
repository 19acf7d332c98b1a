package evidence

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
)

type world struct {
	ev      Evidence
	root    *trustroot.Root
	logSKey string
	logged  time.Time
}

// build makes evidence for one artifact in a two-entry log, signed for real.
func build(t testing.TB) world { return buildTyped(t, tlog.TypeArtifactPublished) }

// buildTyped makes the evidence with a log entry of type entryType.
func buildTyped(t testing.TB, entryType string) world {
	t.Helper()
	sum := sha256.Sum256([]byte("artifact bytes"))
	a := Artifact{Name: "app", Version: "1.0.0", Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: 14,
		Channel: "staging", BuilderID: "spiffe://custody.test/builder/ci"}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := attest.KeyID(&priv.PublicKey)
	st, err := attest.NewProvenance(attest.Artifact{Name: a.Name, Version: a.Version, Digest: a.Digest, Channel: a.Channel, BuilderID: a.BuilderID})
	if err != nil {
		t.Fatal(err)
	}
	env, err := attest.SignEnvelope(attest.PayloadType, st, id, func(pae []byte) ([]byte, error) {
		h := sha256.Sum256(pae)
		return ecdsa.SignASN1(rand.Reader, priv, h[:])
	})
	if err != nil {
		t.Fatal(err)
	}
	envSum := sha256.Sum256(env)
	logged := time.Now().UTC().Truncate(time.Second)
	leaf, err := tlog.Entry{Type: entryType, Time: logged, Actor: "spiffe://custody.test/service/publisher",
		Subject: tlog.Subject{Name: a.Name, Version: a.Version, Digest: a.Digest}, EnvelopeSHA256: hex.EncodeToString(envSum[:])}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	other := tlog.LeafHash([]byte("another entry"))
	mine := tlog.LeafHash(leaf)
	root := sha256.Sum256(append(append([]byte{1}, mine...), other...))
	sk, vk, err := tlog.GenerateKey("custody.test/log")
	if err != nil {
		t.Fatal(err)
	}
	cp, err := tlog.SignCheckpoint(tlog.Checkpoint{Origin: "custody.test/log", Size: 2, Hash: root[:]}, sk)
	if err != nil {
		t.Fatal(err)
	}
	c := trustroottest.New(t, 1)
	key := trustroottest.SigningKey(t, &priv.PublicKey, attest.PurposeArtifact, "artifact", 1, logged.Add(-time.Hour))
	if key.ID != id {
		t.Fatal("key ids differ")
	}
	return world{
		ev:      Evidence{Artifact: a, Envelope: env, Entry: LogEntry{Index: 0, Leaf: leaf, InclusionProof: [][]byte{other}, Checkpoint: cp}},
		root:    c.Root(1, 1, logged, []trustroot.SigningKey{key}, []trustroot.LogKey{{Origin: "custody.test/log", VerifierKey: vk}}),
		logSKey: sk,
		logged:  logged,
	}
}

func TestVerify(t *testing.T) {
	w := build(t)
	if err := Verify(w.ev, w.root); err != nil {
		t.Fatalf("good evidence: %v", err)
	}
	if w := buildTyped(t, tlog.TypeArtifactResigned); Verify(w.ev, w.root) != nil {
		t.Fatalf("re-signed evidence: %v", Verify(w.ev, w.root))
	}
	_, otherLog, _ := tlog.GenerateKey("custody.test/log")
	tests := map[string]struct {
		mutate func(*Evidence, *trustroot.Root, time.Time)
		want   string
	}{
		"mix and match: other digest": {func(e *Evidence, _ *trustroot.Root, _ time.Time) {
			e.Artifact.Digest = "sha256:" + strings.Repeat("2", 64)
		}, "not this artifact"},
		"other version": {func(e *Evidence, _ *trustroot.Root, _ time.Time) { e.Artifact.Version = "1.0.1" }, "not this artifact"},
		"tampered envelope": {func(e *Evidence, _ *trustroot.Root, _ time.Time) {
			e.Envelope = []byte(strings.Replace(string(e.Envelope), `"sig":"`, `"sig":"AAAA`, 1))
		}, "envelope"},
		"key not in the trust root": {func(_ *Evidence, r *trustroot.Root, _ time.Time) { r.SigningKeys = nil }, "is not an artifact key in trust root v1"},
		"key is a decision key": {func(_ *Evidence, r *trustroot.Root, _ time.Time) {
			r.SigningKeys[0].Purpose = attest.PurposeDecision
		}, "is not an artifact key"},
		"key revoked after the signature": {func(_ *Evidence, r *trustroot.Root, at time.Time) {
			later := at.Add(time.Minute)
			r.SigningKeys[0].Status, r.SigningKeys[0].RevokedAt = trustroot.StatusRevoked, &later
		}, "was revoked at"},
		"key window ended before the signature": {func(_ *Evidence, r *trustroot.Root, at time.Time) {
			earlier := at.Add(-time.Minute)
			r.SigningKeys[0].Status, r.SigningKeys[0].ValidUntil = trustroot.StatusRetired, &earlier
		}, "was valid until"},
		"key for other channels":    {func(_ *Evidence, r *trustroot.Root, _ time.Time) { r.SigningKeys[0].Channels = []string{"prod"} }, `signs channels prod, not "staging"`},
		"checkpoint by another key": {func(_ *Evidence, r *trustroot.Root, _ time.Time) { r.LogKeys[0].VerifierKey = otherLog }, "checkpoint"},
		"log not in the trust root": {func(_ *Evidence, r *trustroot.Root, _ time.Time) { r.LogKeys[0].Origin = "other/log" }, `lists no key for log "custody.test/log"`},
		"proof does not match":      {func(e *Evidence, _ *trustroot.Root, _ time.Time) { e.Entry.InclusionProof = [][]byte{make([]byte, 32)} }, "inclusion proof"},
		"wrong index":               {func(e *Evidence, _ *trustroot.Root, _ time.Time) { e.Entry.Index = 1 }, "inclusion proof"},
		"leaf for other envelope": {func(e *Evidence, _ *trustroot.Root, _ time.Time) {
			e.Entry.Leaf = []byte(strings.Replace(string(e.Entry.Leaf), `"envelope_sha256":"`, `"envelope_sha256":"0`, 1)[:len(e.Entry.Leaf)])
		}, "log entry"},
	}
	for name, tt := range tests {
		w := build(t)
		tt.mutate(&w.ev, w.root, w.logged)
		if err := w.root.Validate(); err != nil {
			t.Fatalf("%s: the mutated root is invalid: %v", name, err)
		}
		err := Verify(w.ev, w.root)
		if !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrVerification mentioning %q", name, err, tt.want)
		}
	}
}

// FuzzVerifyEntry: whatever a catalog sends as a log entry, VerifyEntry
// neither panics nor accepts anything but the entry the log holds.
func FuzzVerifyEntry(f *testing.F) {
	w := build(f)
	e := w.ev.Entry
	f.Add(e.Leaf, e.InclusionProof[0], e.Checkpoint, e.Index)
	f.Add([]byte(`{}`), []byte{}, []byte("custody.test/log\n2\n\n"), int64(-1))
	f.Fuzz(func(t *testing.T, leaf, proof, cp []byte, index int64) {
		got := LogEntry{Index: index, Leaf: leaf, InclusionProof: [][]byte{proof}, Checkpoint: cp}
		entry, _, err := VerifyEntry(got, w.root)
		if err != nil {
			if !errors.Is(err, ErrVerification) {
				t.Fatalf("error does not wrap ErrVerification: %v", err)
			}
			return
		}
		if string(leaf) != string(e.Leaf) || index != e.Index || string(proof) != string(e.InclusionProof[0]) || entry == nil {
			t.Fatalf("accepted an entry the log does not hold at index %d: %q", index, leaf)
		}
	})
}

func TestVerifyEntry(t *testing.T) {
	w := build(t)
	entry, cp, err := VerifyEntry(w.ev.Entry, w.root)
	if err != nil || entry.Subject.Digest != w.ev.Artifact.Digest || cp.Size != 2 {
		t.Fatalf("good entry: %v %+v %+v", err, entry, cp)
	}
	bad := w.ev.Entry
	bad.InclusionProof = [][]byte{make([]byte, 32)}
	if _, _, err := VerifyEntry(bad, w.root); !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "log entry 0: inclusion proof") {
		t.Errorf("bad proof: %v", err)
	}
}
