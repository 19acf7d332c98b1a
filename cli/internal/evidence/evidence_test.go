package evidence

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/tlog"
)

type world struct {
	ev      Evidence
	keys    Keys
	logSKey string
}

// build makes evidence for one artifact in a two-entry log, signed for real.
func build(t *testing.T) world {
	t.Helper()
	sum := sha256.Sum256([]byte("artifact bytes"))
	a := Artifact{Name: "app", Version: "1.0.0", Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: 14,
		Channel: "staging", BuilderID: "spiffe://custody.test/builder/ci"}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := attest.KeyID(&priv.PublicKey)
	der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
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
	leaf, err := tlog.Entry{Type: tlog.TypeArtifactPublished, Time: time.Now().UTC().Truncate(time.Second), Actor: "spiffe://custody.test/service/publisher",
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
	return world{
		ev:      Evidence{Artifact: a, Envelope: env, Entry: LogEntry{Index: 0, Leaf: leaf, InclusionProof: [][]byte{other}, Checkpoint: cp}},
		keys:    Keys{Signer: []PublicKey{{KeyID: id, Purpose: attest.PurposeArtifact, Algorithm: attest.AlgECDSAP256, PublicKeyDER: der}}, LogPublicKey: vk},
		logSKey: sk,
	}
}

func TestVerify(t *testing.T) {
	w := build(t)
	if err := Verify(w.ev, w.keys); err != nil {
		t.Fatalf("good evidence: %v", err)
	}
	_, otherLog, _ := tlog.GenerateKey("custody.test/log")
	tests := map[string]struct {
		mutate func(*Evidence, *Keys)
		want   string
	}{
		"mix and match: other digest": {func(e *Evidence, _ *Keys) { e.Artifact.Digest = "sha256:" + strings.Repeat("2", 64) }, "not this artifact"},
		"other version":               {func(e *Evidence, _ *Keys) { e.Artifact.Version = "1.0.1" }, "not this artifact"},
		"tampered envelope": {func(e *Evidence, _ *Keys) {
			e.Envelope = []byte(strings.Replace(string(e.Envelope), `"sig":"`, `"sig":"AAAA`, 1))
		}, "envelope"},
		"key not trusted":           {func(_ *Evidence, k *Keys) { k.Signer[0].Purpose = attest.PurposeDecision }, "not a trusted"},
		"checkpoint by another key": {func(_ *Evidence, k *Keys) { k.LogPublicKey = otherLog }, "checkpoint"},
		"proof does not match":      {func(e *Evidence, _ *Keys) { e.Entry.InclusionProof = [][]byte{make([]byte, 32)} }, "inclusion proof"},
		"wrong index":               {func(e *Evidence, _ *Keys) { e.Entry.Index = 1 }, "inclusion proof"},
		"leaf for other envelope": {func(e *Evidence, _ *Keys) {
			e.Entry.Leaf = []byte(strings.Replace(string(e.Entry.Leaf), `"envelope_sha256":"`, `"envelope_sha256":"0`, 1)[:len(e.Entry.Leaf)])
		}, "log entry"},
	}
	for name, tt := range tests {
		w := build(t)
		tt.mutate(&w.ev, &w.keys)
		err := Verify(w.ev, w.keys)
		if !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrVerification mentioning %q", name, err, tt.want)
		}
	}
}

func TestPinnedTo(t *testing.T) {
	w := build(t)
	if err := w.keys.PinnedTo(w.keys); err != nil {
		t.Fatal(err)
	}
	other := build(t)
	if err := other.keys.PinnedTo(w.keys); err == nil {
		t.Fatal("keys from another stack pass as pinned")
	}
}
