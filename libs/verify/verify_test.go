package verify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
)

const (
	logOrigin   = "custody.test/log"
	witnessName = "custody.test/signer"
)

// authority is what signs evidence: an artifact key, a log key and the
// witness that co-signs the log's checkpoints. The pinned root lists the
// artifact key and the witness.
type authority struct {
	artifact *ecdsa.PrivateKey
	keyID    string
	logKey   string // note signer key of the log
	witness  string // cosignature/v1 signer key
	root     *trustroot.Root
}

func newAuthority(t testing.TB, logged time.Time) *authority {
	t.Helper()
	priv := newKey(t)
	id, _ := attest.KeyID(&priv.PublicKey)
	logKey, _, err := tlog.GenerateKey(logOrigin)
	if err != nil {
		t.Fatal(err)
	}
	witness, witnessV, err := tlog.GenerateCosignerKey(witnessName)
	if err != nil {
		t.Fatal(err)
	}
	key := trustroottest.SigningKey(t, &priv.PublicKey, attest.PurposeArtifact, "artifact", 1, logged.Add(-time.Hour))
	root := trustroottest.New(t, 1).Root(1, 1, logged, []trustroot.SigningKey{key}, []trustroot.LogKey{{Origin: logOrigin, VerifierKey: witnessV}})
	return &authority{artifact: priv, keyID: id, logKey: logKey, witness: witness, root: root}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// world is one artifact's evidence in a two-entry log, signed for real,
// and the options Check is called with.
type world struct {
	ev     Evidence
	root   *trustroot.Root
	opts   Options
	logged time.Time
	by     *authority
	stmt   attest.Artifact
}

func build(t testing.TB) *world {
	t.Helper()
	logged := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	by := newAuthority(t, logged)
	sum := sha256.Sum256([]byte("artifact bytes"))
	a := Artifact{Name: "app", Version: "1.0.0", Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: 14,
		Channel: "staging", BuilderID: "spiffe://custody.test/builder/ci", SourceRepo: "https://git.test/app", SourceCommit: strings.Repeat("c", 40)}
	w := &world{ev: Evidence{Artifact: a}, root: by.root, logged: logged, by: by,
		stmt: attest.Artifact{Name: a.Name, Version: a.Version, Digest: a.Digest, Channel: a.Channel, BuilderID: a.BuilderID,
			SourceRepo: a.SourceRepo, SourceCommit: a.SourceCommit}}
	w.sign(t, by.artifact, by.keyID)
	w.log(t, tlog.TypeArtifactPublished, by, true)
	return w
}

// sign replaces the envelope with w.stmt signed by priv under keyID.
func (w *world) sign(t testing.TB, priv *ecdsa.PrivateKey, keyID string) {
	t.Helper()
	st, err := attest.NewProvenance(w.stmt)
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
}

// log logs the envelope as entry 0 of a two-entry log whose checkpoint by
// signs with its log key and, if cosign, co-signs as its witness.
func (w *world) log(t testing.TB, entryType string, by *authority, cosign bool) {
	t.Helper()
	a := w.ev.Artifact
	envSum := sha256.Sum256(w.ev.Envelope)
	leaf, err := tlog.Entry{Type: entryType, Time: w.logged, Actor: "spiffe://custody.test/service/publisher",
		Subject: tlog.Subject{Name: a.Name, Version: a.Version, Digest: a.Digest}, EnvelopeSHA256: hex.EncodeToString(envSum[:])}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	other := tlog.LeafHash([]byte("another entry"))
	root := sha256.Sum256(append(append([]byte{1}, tlog.LeafHash(leaf)...), other...))
	cp, err := tlog.SignCheckpoint(tlog.Checkpoint{Origin: logOrigin, Size: 2, Hash: root[:]}, by.logKey)
	if err != nil {
		t.Fatal(err)
	}
	if cosign {
		if cp, err = tlog.CosignCheckpoint(cp, by.witness); err != nil {
			t.Fatal(err)
		}
	}
	w.ev.Entry = LogEntry{Index: 0, Leaf: leaf, InclusionProof: [][]byte{other}, Checkpoint: cp}
}

func (w *world) key() *trustroot.SigningKey { return &w.root.SigningKeys[0] }

// TestCheck is the one table of the verifier: every step with a good case
// and forged or mismatched ones. fail is the steps that must fail, each with
// exactly one reason containing want; every other step must pass, except
// those that depend on a failed one (the subject on the signature,
// inclusion on the checkpoint), which are unproven without a reason.
func TestCheck(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(t *testing.T, w *world)
		fail  []Step
		want  string
		check func(t *testing.T, r *Result) // more to assert on a pass
	}{
		{name: "good: published", check: func(t *testing.T, r *Result) {
			if r.KeyID == "" || r.Statement == nil || r.Statement.SourceCommit != strings.Repeat("c", 40) || r.Checkpoint.Size != 2 || r.Checkpoint.CosignedAt.IsZero() {
				t.Errorf("result %+v lacks the key, statement or co-signed checkpoint", r)
			}
		}},
		{name: "good: re-signed", edit: func(t *testing.T, w *world) { w.log(t, tlog.TypeArtifactResigned, w.by, true) }},
		{name: "good: asked by name and digest", edit: func(t *testing.T, w *world) {
			w.opts.Want = Want{Name: "app", Version: "1.0.0", Digest: w.ev.Artifact.Digest}
		}},

		// The catalog answered another question.
		{name: "request: other version", edit: func(t *testing.T, w *world) { w.opts.Want = Want{Name: "app", Version: "2.0.0"} },
			fail: []Step{StepRequest}, want: "catalog returned artifact app@1.0.0"},
		{name: "request: other digest", edit: func(t *testing.T, w *world) { w.opts.Want = Want{Digest: "sha256:" + strings.Repeat("0", 64)} },
			fail: []Step{StepRequest}, want: "for digest sha256:000"},

		// Signature against the pinned root.
		{name: "forged signature", edit: func(t *testing.T, w *world) {
			w.ev.Envelope = []byte(strings.Replace(string(w.ev.Envelope), `"sig":"`, `"sig":"AAAA`, 1))
			w.log(t, tlog.TypeArtifactPublished, w.by, true)
		}, fail: []Step{StepSignature}, want: "does not verify"},
		{name: "forged signature: a statement altered after signing", edit: func(t *testing.T, w *world) {
			env, err := attest.ParseEnvelope(w.ev.Envelope)
			if err != nil {
				t.Fatal(err)
			}
			env.Payload = []byte(strings.Replace(string(env.Payload), `"staging"`, `"prod"`, 1))
			if w.ev.Envelope, err = env.Marshal(); err != nil {
				t.Fatal(err)
			}
			w.log(t, tlog.TypeArtifactPublished, w.by, true)
		}, fail: []Step{StepSignature}, want: "the signature by key"},
		{name: "wrong key version: signed by a version the root does not list", edit: func(t *testing.T, w *world) {
			v2 := newKey(t)
			id, _ := attest.KeyID(&v2.PublicKey)
			w.sign(t, v2, id)
			w.log(t, tlog.TypeArtifactPublished, w.by, true)
		}, fail: []Step{StepSignature}, want: "is not an artifact key in trust root v1"},
		{name: "wrong key version: signed by v2, claiming v1", edit: func(t *testing.T, w *world) {
			w.sign(t, newKey(t), w.by.keyID)
			w.log(t, tlog.TypeArtifactPublished, w.by, true)
		}, fail: []Step{StepSignature}, want: "does not verify"},
		{name: "wrong purpose: a decision key", edit: func(t *testing.T, w *world) { w.key().Purpose = attest.PurposeDecision },
			fail: []Step{StepSignature}, want: "is not an artifact key"},
		{name: "key window starts after the signature", edit: func(t *testing.T, w *world) { w.key().ValidFrom = w.logged.Add(time.Minute) },
			fail: []Step{StepSignature}, want: "is valid from"},
		{name: "key window ended before the signature", edit: func(t *testing.T, w *world) {
			end := w.logged.Add(-time.Minute)
			w.key().Status, w.key().ValidUntil = trustroot.StatusRetired, &end
		}, fail: []Step{StepSignature}, want: "was valid until"},
		{name: "good: key retired after the signature", edit: func(t *testing.T, w *world) {
			end := w.logged.Add(time.Minute)
			w.key().Status, w.key().ValidUntil = trustroot.StatusRetired, &end
		}},
		{name: "revoked key: in the root, after the signature", edit: func(t *testing.T, w *world) {
			at := w.logged.Add(time.Minute)
			w.key().Status, w.key().RevokedAt = trustroot.StatusRevoked, &at
		}, fail: []Step{StepSignature}, want: "(per trust root v1); its signatures are denied even when logged before that"},
		{name: "good: revoked after the signature, accepted before revocation", edit: func(t *testing.T, w *world) {
			at := w.logged.Add(time.Minute)
			w.key().Status, w.key().RevokedAt = trustroot.StatusRevoked, &at
			w.opts.AcceptBeforeRevocation = true
		}},
		{name: "revoked key: in the root, before the signature", edit: func(t *testing.T, w *world) {
			at := w.logged.Add(-time.Minute)
			w.key().Status, w.key().RevokedAt = trustroot.StatusRevoked, &at
			w.opts.AcceptBeforeRevocation = true
		}, fail: []Step{StepSignature}, want: "; the signature was logged at"},
		{name: "revoked key: live, by the signer", edit: func(t *testing.T, w *world) {
			at := w.logged.Add(time.Minute)
			w.opts.Revoked = func(id string) (time.Time, bool) { return at, id == w.by.keyID }
			w.opts.RevokedBy = "the signer"
		}, fail: []Step{StepSignature}, want: "(per the signer); its signatures are denied"},
		{name: "good: another key revoked live", edit: func(t *testing.T, w *world) {
			w.opts.Revoked = func(id string) (time.Time, bool) { return w.logged, id == "other" }
		}},
		{name: "wrong channel: the key signs other channels", edit: func(t *testing.T, w *world) { w.key().Channels = []string{"prod"} },
			fail: []Step{StepSignature}, want: `signs channels prod, not "staging"`},
		{name: "wrong channel: the default key on a channel with a key of its own", edit: func(t *testing.T, w *world) {
			other := trustroottest.SigningKey(t, &newKey(t).PublicKey, attest.PurposeArtifact, "artifact-staging", 1, w.logged.Add(-time.Hour))
			other.Channels = []string{"staging"}
			w.root.SigningKeys = append(w.root.SigningKeys, other)
		}, fail: []Step{StepSignature}, want: `channel "staging" has a key of its own`},
		{name: "good: the key names this channel", edit: func(t *testing.T, w *world) { w.key().Channels = []string{"prod", "staging"} }},
		{name: "malformed envelope", edit: func(t *testing.T, w *world) {
			w.ev.Envelope = []byte("{")
			w.log(t, tlog.TypeArtifactPublished, w.by, true)
		}, fail: []Step{StepSignature}, want: "artifact envelope is malformed"},

		// Subject: the signed statement against the record.
		{name: "wrong subject: another digest", edit: func(t *testing.T, w *world) {
			w.stmt.Digest = "sha256:" + strings.Repeat("2", 64)
			w.sign(t, w.by.artifact, w.by.keyID)
			w.log(t, tlog.TypeArtifactPublished, w.by, true)
		}, fail: []Step{StepSubject}, want: `mix-and-match): signed digest "sha256:2222`},
		{name: "wrong subject: another version", edit: func(t *testing.T, w *world) {
			w.stmt.Version = "0.9.0"
			w.sign(t, w.by.artifact, w.by.keyID)
			w.log(t, tlog.TypeArtifactPublished, w.by, true)
		}, fail: []Step{StepSubject}, want: `signed version "0.9.0", catalog record has "1.0.0"`},
		{name: "wrong subject: record moved to another channel", edit: func(t *testing.T, w *world) { w.ev.Artifact.Channel = "prod" },
			fail: []Step{StepSubject}, want: `signed channel "staging", catalog record has "prod"`},
		{name: "wrong subject: another builder", edit: func(t *testing.T, w *world) { w.ev.Artifact.BuilderID = "spiffe://custody.test/builder/x" },
			fail: []Step{StepSubject}, want: "signed builder.id"},
		{name: "wrong source: another commit", edit: func(t *testing.T, w *world) { w.ev.Artifact.SourceCommit = strings.Repeat("d", 40) },
			fail: []Step{StepSubject}, want: "signed source commit"},

		// The checkpoint: co-signed by the witness the root lists.
		{name: "checkpoint not co-signed", edit: func(t *testing.T, w *world) { w.log(t, tlog.TypeArtifactPublished, w.by, false) },
			fail: []Step{StepCheckpoint}, want: "log checkpoint rejected: checkpoint not signed by the log's key"},
		{name: "checkpoint co-signed by the wrong witness", edit: func(t *testing.T, w *world) {
			other := *w.by
			other.witness, _, _ = tlog.GenerateCosignerKey(witnessName)
			w.log(t, tlog.TypeArtifactPublished, &other, true)
		}, fail: []Step{StepCheckpoint}, want: "checkpoint not signed by the log's key"},
		{name: "checkpoint of a log the root does not list", edit: func(t *testing.T, w *world) { w.root.LogKeys[0].Origin = "other/log" },
			fail: []Step{StepCheckpoint}, want: `lists no key for log "custody.test/log"`},
		{name: "checkpoint under a witness key the root no longer lists", edit: func(t *testing.T, w *world) {
			// The same checkpoint bytes, which opened before the edit
			// (and so are in the warmed cache), under a rotated key.
			_, v, err := tlog.GenerateCosignerKey(witnessName)
			if err != nil {
				t.Fatal(err)
			}
			w.root.LogKeys[0].VerifierKey = v
		}, fail: []Step{StepCheckpoint}, want: "log checkpoint rejected"},
		{name: "checkpoint altered after co-signing", edit: func(t *testing.T, w *world) {
			w.ev.Entry.Checkpoint = []byte(strings.Replace(string(w.ev.Entry.Checkpoint), "\n2\n", "\n3\n", 1))
		}, fail: []Step{StepCheckpoint}, want: "log checkpoint rejected"},

		// The entry in the log.
		{name: "entry not in the log: proof does not match", edit: func(t *testing.T, w *world) { w.ev.Entry.InclusionProof = [][]byte{make([]byte, 32)} },
			fail: []Step{StepInclusion}, want: "log inclusion proof rejected: proof does not match checkpoint"},
		{name: "entry not in the log: another index", edit: func(t *testing.T, w *world) { w.ev.Entry.Index = 1 },
			fail: []Step{StepInclusion}, want: "log inclusion proof rejected"},
		{name: "entry not in the log: negative index", edit: func(t *testing.T, w *world) { w.ev.Entry.Index = -1 },
			fail: []Step{StepInclusion}, want: "index -1 is negative"},
		{name: "entry of another envelope", edit: func(t *testing.T, w *world) {
			good := w.ev.Entry
			w.sign(t, w.by.artifact, w.by.keyID) // same statement, new signature
			w.ev.Entry = good
		}, fail: []Step{StepEntry}, want: "it is not the envelope that was logged"},
		{name: "entry of another artifact", edit: func(t *testing.T, w *world) {
			// The same envelope logged as 2.0.0.
			w.ev.Artifact.Version = "2.0.0"
			w.log(t, tlog.TypeArtifactPublished, w.by, true)
			w.ev.Artifact.Version = "1.0.0"
		}, fail: []Step{StepEntry}, want: "is for app@2.0.0"},
		{name: "entry of another type", edit: func(t *testing.T, w *world) { w.log(t, tlog.TypeAdmissionDecided, w.by, true) },
			fail: []Step{StepEntry}, want: `is of type "admission.decided"`},
		{name: "malformed entry", edit: func(t *testing.T, w *world) { w.ev.Entry.Leaf = []byte("{") },
			fail: []Step{StepSignature, StepInclusion, StepEntry}, want: "log entry 0 is malformed"},

		// Roots that are not the pinned one.
		{name: "bundle carrying its own root", edit: func(t *testing.T, w *world) {
			forger := newAuthority(t, w.logged)
			w.sign(t, forger.artifact, forger.keyID)
			w.log(t, tlog.TypeArtifactPublished, forger, true)
			// Under the forger's own root all of it verifies; w.root, the
			// pinned one, stays.
			if err := Check(w.ev, forger.root, Options{}).Err(); err != nil {
				t.Fatalf("the forged evidence does not even verify under the forger's root: %v", err)
			}
		}, fail: []Step{StepSignature, StepCheckpoint}, want: "is not an artifact key in trust root v1"},
		{name: "no trust root", edit: func(t *testing.T, w *world) { w.root = nil },
			fail: []Step{StepSignature, StepCheckpoint}, want: "no usable trust root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := build(t)
			// A cache that has seen the good evidence, before the edit,
			// must not change any answer after it (decision 0108).
			cache := NewCache(8)
			if err := Check(w.ev, w.root, Options{Cache: cache}).Err(); err != nil {
				t.Fatalf("good evidence refused with a cache: %v", err)
			}
			if tt.edit != nil {
				tt.edit(t, w)
			}
			if w.root != nil {
				if err := w.root.Validate(); err != nil {
					t.Fatalf("the edited root is invalid: %v", err)
				}
			}
			r := Check(w.ev, w.root, w.opts)
			cached := w.opts
			cached.Cache = cache
			for i := range 2 {
				if diff := cmp.Diff(summary(r), summary(Check(w.ev, w.root, cached))); diff != "" {
					t.Errorf("with a cache (check %d), the result differs (-without +with):\n%s", i+1, diff)
				}
			}
			err := r.Err()
			if len(tt.fail) == 0 {
				if err != nil {
					t.Fatalf("good evidence refused: %v", err)
				}
				for _, s := range Steps {
					if !r.OK(s) {
						t.Errorf("step %s not OK on a pass", s)
					}
				}
				if tt.check != nil {
					tt.check(t, r)
				}
				return
			}
			if !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v: want ErrVerification containing %q", err, tt.want)
			}
			var failed []Step
			for _, f := range r.Failures {
				if slices.Contains(failed, f.Step) {
					t.Errorf("step %s failed twice: %q", f.Step, f.Reason)
				}
				failed = append(failed, f.Step)
			}
			if !slices.Equal(failed, tt.fail) {
				t.Errorf("failed steps %v (%q), want %v", failed, r.Failures, tt.fail)
			}
			for _, s := range Steps {
				unproven := slices.Contains(tt.fail, s) ||
					(s == StepSubject && slices.Contains(tt.fail, StepSignature)) ||
					(s == StepInclusion && slices.Contains(tt.fail, StepCheckpoint))
				if r.OK(s) == unproven {
					t.Errorf("step %s: OK = %v, want %v", s, r.OK(s), !unproven)
				}
			}
			if r.OK(StepSignature) != (r.Statement != nil) {
				t.Errorf("statement %v with signature OK = %v", r.Statement, r.OK(StepSignature))
			}
		})
	}
}

func TestEntry(t *testing.T) {
	w := build(t)
	entry, cp, err := Entry(w.ev.Entry, w.root)
	if err != nil || entry.Subject.Digest != w.ev.Artifact.Digest || cp.Size != 2 {
		t.Fatalf("good entry: %v %+v %+v", err, entry, cp)
	}
	bad := w.ev.Entry
	bad.InclusionProof = [][]byte{make([]byte, 32)}
	if _, _, err := Entry(bad, w.root); !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "log entry 0: inclusion proof") {
		t.Errorf("bad proof: %v", err)
	}
	w.log(t, tlog.TypeArtifactPublished, w.by, false)
	if _, _, err := Entry(w.ev.Entry, w.root); !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "checkpoint not signed") {
		t.Errorf("checkpoint not co-signed: %v", err)
	}
}

// FuzzEntry: whatever a catalog sends as a log entry, Entry neither panics
// nor accepts anything but the entry the log holds.
func FuzzEntry(f *testing.F) {
	w := build(f)
	e := w.ev.Entry
	f.Add(e.Leaf, e.InclusionProof[0], e.Checkpoint, e.Index)
	f.Add([]byte(`{}`), []byte{}, []byte(logOrigin+"\n2\n\n"), int64(-1))
	f.Fuzz(func(t *testing.T, leaf, proof, cp []byte, index int64) {
		got := LogEntry{Index: index, Leaf: leaf, InclusionProof: [][]byte{proof}, Checkpoint: cp}
		entry, _, err := Entry(got, w.root)
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

// FuzzCheck: whatever envelope and record a catalog sends with a genuine
// log entry, Check neither panics nor passes anything but the evidence
// that was signed and logged.
func FuzzCheck(f *testing.F) {
	w := build(f)
	f.Add(w.ev.Envelope, w.ev.Artifact.Name, w.ev.Artifact.Digest, w.ev.Artifact.Channel)
	f.Add([]byte(`{"payloadType":"x","payload":"","signatures":[]}`), "", "", "")
	// One cache across inputs: whatever it saw, it must not change an
	// answer.
	cache := NewCache(64)
	f.Fuzz(func(t *testing.T, envelope []byte, name, digest, channel string) {
		ev := w.ev
		ev.Envelope = envelope
		ev.Artifact.Name, ev.Artifact.Digest, ev.Artifact.Channel = name, digest, channel
		r := Check(ev, w.root, Options{})
		if diff := cmp.Diff(summary(r), summary(Check(ev, w.root, Options{Cache: cache}))); diff != "" {
			t.Fatalf("with a cache the result differs (-without +with):\n%s", diff)
		}
		if r.Err() != nil {
			if len(r.Failures) == 0 || !errors.Is(r.Err(), ErrVerification) {
				t.Fatalf("failures %v, error %v", r.Failures, r.Err())
			}
			return
		}
		if string(envelope) != string(w.ev.Envelope) || ev.Artifact != w.ev.Artifact {
			t.Fatalf("passed evidence that was not signed and logged: %q %+v", envelope, ev.Artifact)
		}
	})
}

// resultSummary is a Result without the failures' causes (distinct error
// values), for comparing two Checks.
type resultSummary struct {
	KeyID      string
	Statement  *attest.Artifact
	Entry      *tlog.Entry
	Checkpoint *tlog.Checkpoint
	Confirmed  []string
	Failures   []string
	OK         map[Step]bool
}

func summary(r *Result) resultSummary {
	s := resultSummary{KeyID: r.KeyID, Statement: r.Statement, Entry: r.Entry, Checkpoint: r.Checkpoint, Confirmed: r.Confirmed, OK: map[Step]bool{}}
	for _, f := range r.Failures {
		s.Failures = append(s.Failures, string(f.Step)+": "+f.Reason)
	}
	for _, st := range Steps {
		s.OK[st] = r.OK(st)
	}
	return s
}

// TestCacheCheckpointCopies: a checkpoint from the cache is the caller's
// own; changing it changes no later answer.
func TestCacheCheckpointCopies(t *testing.T) {
	w := build(t)
	cache := NewCache(8)
	first := Check(w.ev, w.root, Options{Cache: cache})
	if err := first.Err(); err != nil {
		t.Fatal(err)
	}
	want := *first.Checkpoint
	want.Hash = slices.Clone(first.Checkpoint.Hash)
	first.Checkpoint.Hash[0] ^= 1
	first.Checkpoint.Size++
	for range 2 {
		r := Check(w.ev, w.root, Options{Cache: cache})
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(&want, r.Checkpoint); diff != "" {
			t.Fatalf("cached checkpoint changed (-want +got):\n%s", diff)
		}
		r.Checkpoint.Hash[1] ^= 1
	}
}
