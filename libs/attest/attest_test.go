package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/libs/digest"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

const digestA = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
const digestB = "sha256:2222222222222222222222222222222222222222222222222222222222222222"

var when = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func artifact() Artifact {
	return Artifact{Name: "app", Version: "1.4.0", Digest: digestA, Channel: "staging",
		BuilderID: "spiffe://custody.test/builder/ci", SourceRepo: "https://git.example/app", SourceCommit: "3f2a",
		StartedOn: when, FinishedOn: when.Add(time.Second)}
}

func decision() Decision {
	return Decision{VerifierID: "spiffe://custody.test/service/gatekeeper", Name: "app", Version: "1.4.0", Digest: digestA,
		Environment: "staging", PolicyURI: "custody:policy/admission", PolicyDigest: digestB, DecisionID: "d-1",
		Passed: true, Time: when, Reasons: []string{"signature verified"}}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", name, diff)
	}
}

func TestProvenanceRoundTrip(t *testing.T) {
	b, err := NewProvenance(artifact())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "provenance.json", b)
	st, err := ParseStatement(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.Artifact()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(artifact(), *got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if _, err := st.Decision(); err == nil {
		t.Error("Decision() of a provenance statement: want an error")
	}
}

func TestVSARoundTrip(t *testing.T) {
	for _, passed := range []bool{true, false} {
		d := decision()
		d.Passed = passed
		b, err := NewVSA(d)
		if err != nil {
			t.Fatal(err)
		}
		if passed {
			golden(t, "vsa.json", b)
		}
		st, err := ParseStatement(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := st.Decision()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(d, *got); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
		if _, err := st.Artifact(); err == nil {
			t.Error("Artifact() of a VSA: want an error")
		}
	}
}

// TestVSAFieldRules: a bundle decision carries the VSA v1 fields on an
// allow and a deny: policy {uri, digest} with the bundle's dirHash,
// inputAttestations each with a uri and sha256, verifiedLevels FAILED on
// a deny; the revision and dry-run flag in Custody's extension. Records
// that break the rules are refused.
func TestVSAFieldRules(t *testing.T) {
	d := decision()
	d.PolicyDigest = "dirHash:" + strings.Repeat("cd", 32)
	d.PolicyRevision, d.DryRun = "2026-12-03.1", true
	d.InputAttestations = []ResourceDescriptor{InputAttestation("app", "1.4.0", AttestationProvenance, []byte("envelope")),
		InputAttestation("app", "1.4.0", AttestationSBOM, []byte("sbom envelope"))}
	for _, passed := range []bool{true, false} {
		d.Passed = passed
		b, err := NewVSA(d)
		if err != nil {
			t.Fatal(err)
		}
		if passed {
			golden(t, "vsa-bundle.json", b)
		}
		var raw struct {
			Predicate struct {
				Policy struct {
					URI    string            `json:"uri"`
					Digest map[string]string `json:"digest"`
				} `json:"policy"`
				InputAttestations  []ResourceDescriptor `json:"inputAttestations"`
				VerificationResult string               `json:"verificationResult"`
				VerifiedLevels     []string             `json:"verifiedLevels"`
			} `json:"predicate"`
		}
		if err := json.Unmarshal(b, &raw); err != nil {
			t.Fatal(err)
		}
		p := raw.Predicate
		wantLevels := map[bool]string{true: "SLSA_BUILD_LEVEL_2", false: "FAILED"}[passed]
		if p.Policy.URI != "custody:policy/admission" || !cmp.Equal(p.Policy.Digest, map[string]string{"dirHash": strings.Repeat("cd", 32)}) ||
			len(p.InputAttestations) != 2 || p.InputAttestations[0].URI != "custody:app@1.4.0?attestation=provenance" ||
			p.InputAttestations[0].Digest["sha256"] != strings.TrimPrefix(digest.Of([]byte("envelope")), "sha256:") ||
			!cmp.Equal(p.VerifiedLevels, []string{wantLevels}) {
			t.Errorf("passed=%v: predicate %+v", passed, p)
		}
		st, err := ParseStatement(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := st.Decision()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(d, *got); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
	for name, mod := range map[string]func(*Decision){
		"an input without a digest": func(d *Decision) { d.InputAttestations = []ResourceDescriptor{{URI: "custody:x"}} },
		"an input without a uri":    func(d *Decision) { d.InputAttestations[0].URI = "" },
		"too many inputs": func(d *Decision) {
			for range maxInputAttestations {
				d.InputAttestations = append(d.InputAttestations, d.InputAttestations[0])
			}
		},
		"md5 policy digest": func(d *Decision) { d.PolicyDigest = "md5:" + strings.Repeat("ab", 32) },
		"no policy uri":     func(d *Decision) { d.PolicyURI = "" },
		"no time verified":  func(d *Decision) { d.Time = time.Time{} },
	} {
		bad := decision()
		bad.InputAttestations = []ResourceDescriptor{InputAttestation("app", "1.4.0", AttestationProvenance, nil)}
		mod(&bad)
		if _, err := NewVSA(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A deny that claims a level, or an allow that says FAILED, is not a
	// record Custody wrote.
	for _, tc := range []struct {
		passed   bool
		from, to string
	}{
		{false, `"verifiedLevels":["FAILED"]`, `"verifiedLevels":["SLSA_BUILD_LEVEL_2"]`},
		{true, `"verifiedLevels":["SLSA_BUILD_LEVEL_2"]`, `"verifiedLevels":["FAILED"]`},
	} {
		d := decision()
		d.Passed = tc.passed
		b, _ := NewVSA(d)
		forged := strings.Replace(string(b), tc.from, tc.to, 1)
		if forged == string(b) {
			t.Fatalf("%s not found in %s", tc.from, b)
		}
		st, err := ParseStatement([]byte(forged))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Decision(); !errors.Is(err, ErrMalformed) {
			t.Errorf("passed=%v with %s: %v, want ErrMalformed", tc.passed, tc.to, err)
		}
	}
}

func TestConstructorsRejectBadInput(t *testing.T) {
	a := artifact()
	a.Digest = "sha256:ABC"
	if _, err := NewProvenance(a); err == nil {
		t.Error("bad digest accepted")
	}
	a = artifact()
	a.BuilderID = ""
	if _, err := NewProvenance(a); err == nil {
		t.Error("missing builder id accepted")
	}
	d := decision()
	d.DecisionID = ""
	if _, err := NewVSA(d); err == nil {
		t.Error("missing decision id accepted")
	}
}

type testKey struct {
	Key
	sign func([]byte) ([]byte, error)
}

func ecKey(t *testing.T, purpose string) testKey {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := KeyID(&priv.PublicKey)
	return testKey{Key{ID: id, Purpose: purpose, Algorithm: AlgECDSAP256, Public: &priv.PublicKey}, func(m []byte) ([]byte, error) {
		sum := sha256.Sum256(m)
		return ecdsa.SignASN1(rand.Reader, priv, sum[:])
	}}
}

func edKey(t *testing.T, purpose string) testKey {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := KeyID(pub)
	return testKey{Key{ID: id, Purpose: purpose, Algorithm: AlgEd25519, Public: pub}, func(m []byte) ([]byte, error) {
		return ed25519.Sign(priv, m), nil
	}}
}

func TestEnvelopeVerify(t *testing.T) {
	stmt, _ := NewProvenance(artifact())
	for _, mk := range []func(*testing.T, string) testKey{ecKey, edKey} {
		k := mk(t, PurposeArtifact)
		other := mk(t, PurposeArtifact)
		raw, err := SignEnvelope(PayloadType, stmt, k.ID, k.sign)
		if err != nil {
			t.Fatal(err)
		}
		env, err := ParseEnvelope(raw)
		if err != nil {
			t.Fatal(err)
		}
		if id, err := env.Verify([]Key{other.Key, k.Key}, PurposeArtifact); err != nil || id != k.ID {
			t.Fatalf("%s: Verify = %q, %v", k.Algorithm, id, err)
		}
		if !bytes.Equal(env.Payload, stmt) {
			t.Fatal("payload changed")
		}
		if _, err := env.Verify([]Key{other.Key}, PurposeArtifact); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("%s: untrusted key: %v, want ErrUnknownKey", k.Algorithm, err)
		}
		decisionKey := k.Key
		decisionKey.Purpose = PurposeDecision
		if _, err := env.Verify([]Key{decisionKey}, PurposeArtifact); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("%s: key of another purpose: %v, want ErrUnknownKey", k.Algorithm, err)
		}
		// Same key id, other key material: the signature must not verify.
		impostor := other.Key
		impostor.ID = k.ID
		if _, err := env.Verify([]Key{impostor}, PurposeArtifact); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: impostor key: %v, want ErrBadSignature", k.Algorithm, err)
		}
		tampered := *env
		tampered.Payload = bytes.Replace(env.Payload, []byte("1.4.0"), []byte("1.4.1"), 1)
		if _, err := tampered.Verify([]Key{k.Key}, PurposeArtifact); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: tampered payload: %v, want ErrBadSignature", k.Algorithm, err)
		}
		retyped := *env
		retyped.PayloadType = "text/plain"
		if _, err := retyped.Verify([]Key{k.Key}, PurposeArtifact); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: changed payload type: %v, want ErrBadSignature", k.Algorithm, err)
		}
	}
}

// A valid envelope for A shown for B: the signature verifies, the subject
// does not match, and callers compare Artifact().Digest.
func TestMixAndMatchIsVisible(t *testing.T) {
	k := ecKey(t, PurposeArtifact)
	stmt, _ := NewProvenance(artifact())
	raw, _ := SignEnvelope(PayloadType, stmt, k.ID, k.sign)
	env, _ := ParseEnvelope(raw)
	st, err := ParseStatement(env.Payload)
	if err != nil {
		t.Fatal(err)
	}
	a, err := st.Artifact()
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest == digestB {
		t.Fatal("statement for A claims digest B")
	}
}

func TestParseEnvelopeRejects(t *testing.T) {
	for name, in := range map[string]string{
		"empty":          ``,
		"not json":       `hello`,
		"unknown field":  `{"payloadType":"t","payload":"","signatures":[{"keyid":"k","sig":"AA=="}],"x":1}`,
		"no signatures":  `{"payloadType":"t","payload":"","signatures":[]}`,
		"bad base64":     `{"payloadType":"t","payload":"!!","signatures":[{"keyid":"k","sig":"AA=="}]}`,
		"empty sig":      `{"payloadType":"t","payload":"","signatures":[{"keyid":"k","sig":""}]}`,
		"trailing":       `{"payloadType":"t","payload":"","signatures":[{"keyid":"k","sig":"AA=="}]} {}`,
		"no type":        `{"payload":"","signatures":[{"keyid":"k","sig":"AA=="}]}`,
		"oversize":       `{"payloadType":"t","payload":"` + strings.Repeat("A", MaxEnvelopeSize) + `"}`,
		"wrong sig type": `{"payloadType":"t","payload":"","signatures":[{"keyid":1,"sig":"AA=="}]}`,
		// These four were accepted before the one strict decoder.
		"trailing bracket": `{"payloadType":"t","payload":"","signatures":[{"keyid":"k","sig":"AA=="}]}]`,
		"trailing brace":   `{"payloadType":"t","payload":"","signatures":[{"keyid":"k","sig":"AA=="}]}}`,
		"duplicate key":    `{"payloadType":"t","payloadType":"u","payload":"","signatures":[{"keyid":"k","sig":"AA=="}]}`,
		"field case":       `{"PayloadType":"t","payload":"","signatures":[{"keyid":"k","sig":"AA=="}]}`,
	} {
		if _, err := ParseEnvelope([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestParseStatementRejects(t *testing.T) {
	for name, in := range map[string]string{
		"wrong type":    `{"_type":"https://in-toto.io/Statement/v0.1","subject":[{"digest":{"sha256":"aa"}}],"predicateType":"p","predicate":{}}`,
		"no subject":    `{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"p","predicate":{}}`,
		"no digest":     `{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"a"}],"predicateType":"p","predicate":{}}`,
		"no predicate":  `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"aa"}}],"predicateType":"p"}`,
		"unknown field": `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"aa"}}],"predicateType":"p","predicate":{},"x":1}`,
	} {
		if _, err := ParseStatement([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestArtifactRejectsTwoSubjectsAndBadDigest(t *testing.T) {
	stmt, _ := NewProvenance(artifact())
	st, _ := ParseStatement(stmt)
	two := *st
	two.Subjects = append(two.Subjects, st.Subjects[0])
	if _, err := two.Artifact(); err == nil {
		t.Error("two subjects accepted")
	}
	bad := *st
	bad.Subjects = []Subject{{Name: "app", Digest: map[string]string{"sha256": "XYZ"}}}
	if _, err := bad.Artifact(); err == nil {
		t.Error("bad subject digest accepted")
	}
	renamed := *st
	renamed.Subjects = []Subject{{Name: "other", Digest: st.Subjects[0].Digest}}
	if _, err := renamed.Artifact(); err == nil {
		t.Error("subject name differing from provenance accepted")
	}
}

func FuzzParseEnvelope(f *testing.F) {
	stmt, _ := NewProvenance(artifact())
	k := ecKey(&testing.T{}, PurposeArtifact)
	raw, _ := SignEnvelope(PayloadType, stmt, k.ID, k.sign)
	f.Add(raw)
	f.Add([]byte(`{"payloadType":"t","payload":"","signatures":[{"keyid":"k","sig":"AA=="}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := ParseEnvelope(b)
		if err != nil {
			return
		}
		_, _ = env.Verify([]Key{k.Key}, PurposeArtifact)
		out, err := env.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseEnvelope(out)
		if err != nil {
			t.Fatalf("re-parse of marshaled envelope: %v", err)
		}
		if !bytes.Equal(again.Payload, env.Payload) || again.PayloadType != env.PayloadType {
			t.Fatal("marshal round trip changed the envelope")
		}
	})
}

func FuzzParseStatement(f *testing.F) {
	p, _ := NewProvenance(artifact())
	v, _ := NewVSA(decision())
	f.Add(p)
	f.Add(v)
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStatement(b)
		if err != nil {
			return
		}
		if a, err := st.Artifact(); err == nil {
			if _, err := digest.Parse(a.Digest); err != nil {
				t.Fatalf("Artifact() returned a bad digest %q", a.Digest)
			}
		}
		if d, err := st.Decision(); err == nil && d.DecisionID == "" {
			t.Fatal("Decision() without a decision id")
		}
	})
}
