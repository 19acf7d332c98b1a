package verify

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/libs/tlog"
)

const sbomDoc = `{"bomFormat":"CycloneDX","specVersion":"1.6","components":[{"name":"yaml"}]}`

// sbomWorld is an artifact's verified record and its SBOM attestation,
// signed and logged for real.
type sbomWorld struct {
	*world
	ev  SBOMEvidence
	ref attest.SBOMRef
	// details and actor of the sbom.attached entry.
	details sbomEntryDetails
	actor   string
	typ     string
}

func buildSBOM(t testing.TB) *sbomWorld {
	w := &sbomWorld{world: build(t), actor: "spiffe://custody.test/service/publisher", typ: tlog.TypeSBOMAttached}
	a := w.world.ev.Artifact
	w.ref = attest.SBOMRef{ArtifactName: a.Name, ArtifactDigest: a.Digest, Format: attest.SBOMFormatCycloneDX, DocumentDigest: digest.Of([]byte(sbomDoc))}
	w.ev.Document = []byte(sbomDoc)
	w.signSBOM(t, w.by.artifact, w.by.keyID)
	return w
}

// signSBOM signs w.ref with priv and resets the details to match.
func (w *sbomWorld) signSBOM(t testing.TB, priv *ecdsa.PrivateKey, keyID string) {
	t.Helper()
	st, err := attest.SBOMStatement(w.ref)
	if err != nil {
		t.Fatal(err)
	}
	w.ev.Envelope, err = attest.SignEnvelope(attest.PayloadType, st, keyID, func(pae []byte) ([]byte, error) {
		h := sha256.Sum256(pae)
		return ecdsa.SignASN1(rand.Reader, priv, h[:])
	})
	if err != nil {
		t.Fatal(err)
	}
	a := w.world.ev.Artifact
	sum := sha256.Sum256(w.ev.Envelope)
	w.details = sbomEntryDetails{Name: a.Name, Version: a.Version, Digest: a.Digest, Format: w.ref.Format, Document: w.ref.DocumentDigest,
		Components: 1, By: a.BuilderID, EnvelopeSHA256: hex.EncodeToString(sum[:])}
}

// logSBOM logs the sbom.attached entry as entry 0 of a two-entry log.
func (w *sbomWorld) logSBOM(t testing.TB, cosign bool) {
	t.Helper()
	details, err := json.Marshal(w.details)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := tlog.Entry{Type: w.typ, Time: w.logged, Actor: w.actor, Subject: tlog.Subject{Digest: w.details.Digest}, Details: details}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	other := tlog.LeafHash([]byte("another entry"))
	root := sha256.Sum256(append(append([]byte{1}, tlog.LeafHash(leaf)...), other...))
	cp, err := tlog.SignCheckpoint(tlog.Checkpoint{Origin: logOrigin, Size: 2, Hash: root[:]}, w.by.logKey)
	if err != nil {
		t.Fatal(err)
	}
	if cosign {
		if cp, err = tlog.CosignCheckpoint(cp, w.by.witness); err != nil {
			t.Fatal(err)
		}
	}
	w.ev.Entry = LogEntry{Index: 0, Leaf: leaf, InclusionProof: [][]byte{other}, Checkpoint: cp}
}

// TestSBOM is the table of SBOM attestations: the genuine one verifies;
// each forgery or mismatch fails with a reason naming it.
func TestSBOM(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, w *sbomWorld)
		want   string // "" passes
	}{
		{"genuine", func(*testing.T, *sbomWorld) {}, ""},
		{"without the document", func(_ *testing.T, w *sbomWorld) { w.ev.Document = nil }, ""},
		{"another document", func(_ *testing.T, w *sbomWorld) { w.ev.Document = []byte(sbomDoc + " ") }, "does not hash to"},
		{"signed by an unknown key", func(t *testing.T, w *sbomWorld) {
			k := newKey(t)
			id, _ := attest.KeyID(&k.PublicKey)
			w.signSBOM(t, k, id)
		}, "not signed by a valid artifact key"},
		{"about another artifact", func(t *testing.T, w *sbomWorld) {
			w.ref.ArtifactDigest = "sha256:" + strings.Repeat("9", 64)
			w.signSBOM(t, w.by.artifact, w.by.keyID)
			w.details.Digest = w.world.ev.Artifact.Digest
		}, "the SBOM statement is about"},
		{"about another name", func(t *testing.T, w *sbomWorld) {
			w.ref.ArtifactName = "other"
			w.signSBOM(t, w.by.artifact, w.by.keyID)
		}, "the SBOM statement is about"},
		{"a provenance envelope", func(_ *testing.T, w *sbomWorld) {
			w.ev.Envelope = w.world.ev.Envelope
			sum := sha256.Sum256(w.ev.Envelope)
			w.details.EnvelopeSHA256 = hex.EncodeToString(sum[:])
		}, "no SBOM statement"},
		{"the entry records another envelope", func(_ *testing.T, w *sbomWorld) { w.details.EnvelopeSHA256 = strings.Repeat("0", 64) }, "another SBOM envelope"},
		{"the entry records another document", func(_ *testing.T, w *sbomWorld) { w.details.Document = "sha256:" + strings.Repeat("1", 64) }, "another SBOM document"},
		{"the entry names another builder", func(_ *testing.T, w *sbomWorld) { w.details.By = "spiffe://custody.test/builder/other" }, "not the artifact's builder"},
		{"the entry is another type", func(_ *testing.T, w *sbomWorld) { w.typ = tlog.TypeArtifactPublished }, "not an sbom.attached"},
		{"the entry is by an edge", func(_ *testing.T, w *sbomWorld) { w.actor = "spiffe://custody.test/edge/dev" }, "log entry was written by"},
		{"the entry is about another version", func(_ *testing.T, w *sbomWorld) { w.details.Version = "2.0.0" }, "log entry is about"},
		{"the key is revoked", func(_ *testing.T, w *sbomWorld) {
			at := w.logged.Add(-time.Minute)
			w.key().RevokedAt = &at
			w.key().Status = "revoked"
		}, "revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := buildSBOM(t)
			tc.change(t, w)
			w.logSBOM(t, true)
			ref, err := SBOM(w.ev, w.world.ev.Artifact, w.root, Options{})
			if tc.want == "" {
				if err != nil || ref.DocumentDigest != digest.Of([]byte(sbomDoc)) {
					t.Fatalf("SBOM: %+v, %v", ref, err)
				}
				return
			}
			if !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("SBOM: %v, want a verification failure containing %q", err, tc.want)
			}
		})
	}
	w := buildSBOM(t)
	w.logSBOM(t, false)
	if _, err := SBOM(w.ev, w.world.ev.Artifact, w.root, Options{}); !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "checkpoint") {
		t.Errorf("checkpoint not co-signed: %v", err)
	}
	if _, err := SBOM(w.ev, w.world.ev.Artifact, nil, Options{}); !errors.Is(err, ErrVerification) {
		t.Errorf("no trust root: %v", err)
	}
}

// TestSBOMComponents: the components returned are the attested
// document's; a catalog list that differs in any field or count, or no
// document, fails.
func TestSBOMComponents(t *testing.T) {
	w := buildSBOM(t)
	w.logSBOM(t, true)
	a := w.world.ev.Artifact
	good := []sbom.Component{{Name: "yaml"}}
	comps, ref, err := SBOMComponents(w.ev, a, w.root, Options{}, good)
	if err != nil || len(comps) != 1 || comps[0].Name != "yaml" || ref.Format != attest.SBOMFormatCycloneDX {
		t.Fatalf("SBOMComponents: %v, %+v, %v", comps, ref, err)
	}
	for name, listed := range map[string][]sbom.Component{
		"none":          nil,
		"one more":      {{Name: "yaml"}, {Name: "extra"}},
		"another name":  {{Name: "yml"}},
		"a licence":     {{Name: "yaml", License: "MIT"}},
		"a purl added":  {{Name: "yaml", PURL: "pkg:golang/x@v1"}},
		"a version set": {{Name: "yaml", Version: "v3"}},
	} {
		if _, _, err := SBOMComponents(w.ev, a, w.root, Options{}, listed); !errors.Is(err, ErrVerification) {
			t.Errorf("catalog list %s: %v, want ErrVerification", name, err)
		}
	}
	noDoc := w.ev
	noDoc.Document = nil
	if _, _, err := SBOMComponents(noDoc, a, w.root, Options{}, good); !errors.Is(err, ErrVerification) {
		t.Errorf("no document: %v", err)
	}
}

// FuzzSBOM: whatever envelope, log entry details and document a catalog
// sends, SBOM neither panics nor passes anything but the attestation that
// was signed and logged.
func FuzzSBOM(f *testing.F) {
	w := buildSBOM(f)
	w.logSBOM(f, true)
	good := w.ev
	f.Add(good.Envelope, good.Entry.Leaf, good.Document)
	f.Add([]byte(`{"payloadType":"x","payload":"","signatures":[]}`), []byte(`{}`), []byte(nil))
	f.Fuzz(func(t *testing.T, envelope, leaf, doc []byte) {
		ev := good
		ev.Envelope, ev.Entry.Leaf, ev.Document = envelope, leaf, doc
		ref, err := SBOM(ev, w.world.ev.Artifact, w.root, Options{})
		if err != nil {
			if !errors.Is(err, ErrVerification) {
				t.Fatalf("error does not wrap ErrVerification: %v", err)
			}
			return
		}
		if string(envelope) != string(good.Envelope) || string(leaf) != string(good.Entry.Leaf) || ref == nil ||
			doc != nil && string(doc) != string(good.Document) {
			t.Fatalf("passed an SBOM attestation that was not signed and logged: %q %q %q", envelope, leaf, doc)
		}
	})
}
