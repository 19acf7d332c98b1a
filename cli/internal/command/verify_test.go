package command

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"

	"github.com/custody-dev/custody/cli/internal/bundle"
	"github.com/custody-dev/custody/libs/verify"
)

// verifyWorld is an artifact file with its evidence signed by key, and
// trust roots v1 and v2 by one ceremony, both listing key and the log key.
type verifyWorld struct {
	dir      string
	file     string
	ev       verify.Evidence
	key      *ecdsa.PrivateKey
	ceremony *trustroottest.Ceremony
	roots    []*trustroot.Root
	envs     [][]byte // envs[i] is v(i+1)
}

func newVerifyWorld(t *testing.T) *verifyWorld {
	t.Helper()
	dir := t.TempDir()
	content := []byte("artifact bytes")
	file := filepath.Join(dir, "app.tar")
	if err := os.WriteFile(file, content, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	a := verify.Artifact{Name: "app", Version: "1.0.0", Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(content)),
		Channel: "prod", BuilderID: "spiffe://custody.test/builder/ci"}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	logged := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	logSigner, logVerifier, err := tlog.GenerateKey("custody.test/log")
	if err != nil {
		t.Fatal(err)
	}
	w := &verifyWorld{dir: dir, file: file, key: key, ceremony: trustroottest.New(t, 2)}
	w.ev = signedEvidence(t, a, key, logged, logSigner)
	signing := []trustroot.SigningKey{trustroottest.SigningKey(t, &key.PublicKey, attest.PurposeArtifact, "artifact", 1, logged.Add(-time.Hour))}
	logs := []trustroot.LogKey{{Origin: "custody.test/log", VerifierKey: logVerifier}}
	for v := int64(1); v <= 2; v++ {
		r := w.ceremony.Root(v, 2, time.Now(), signing, logs)
		w.roots = append(w.roots, r)
		w.envs = append(w.envs, w.ceremony.Sign(t, r))
	}
	return w
}

// signedEvidence signs a's provenance with key and logs it at logged, in a
// two-entry log whose checkpoint logSigner signs.
func signedEvidence(t *testing.T, a verify.Artifact, key *ecdsa.PrivateKey, logged time.Time, logSigner string) verify.Evidence {
	t.Helper()
	id, _ := attest.KeyID(&key.PublicKey)
	st, err := attest.NewProvenance(attest.Artifact{Name: a.Name, Version: a.Version, Digest: a.Digest, Channel: a.Channel, BuilderID: a.BuilderID})
	if err != nil {
		t.Fatal(err)
	}
	env, err := attest.SignEnvelope(attest.PayloadType, st, id, func(pae []byte) ([]byte, error) {
		h := sha256.Sum256(pae)
		return ecdsa.SignASN1(rand.Reader, key, h[:])
	})
	if err != nil {
		t.Fatal(err)
	}
	envSum := sha256.Sum256(env)
	leaf, err := tlog.Entry{Type: tlog.TypeArtifactPublished, Time: logged, Actor: "spiffe://custody.test/service/publisher",
		Subject: tlog.Subject{Name: a.Name, Version: a.Version, Digest: a.Digest}, EnvelopeSHA256: hex.EncodeToString(envSum[:])}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	other := tlog.LeafHash([]byte("another entry"))
	root := sha256.Sum256(append(append([]byte{1}, tlog.LeafHash(leaf)...), other...))
	cp, err := tlog.SignCheckpoint(tlog.Checkpoint{Origin: "custody.test/log", Size: 2, Hash: root[:]}, logSigner)
	if err != nil {
		t.Fatal(err)
	}
	return verify.Evidence{Artifact: a, Envelope: env, Entry: verify.LogEntry{Index: 0, Leaf: leaf, InclusionProof: [][]byte{other}, Checkpoint: cp}}
}

func (w *verifyWorld) write(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(w.dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (w *verifyWorld) bundle(t *testing.T, chain [][]byte, version int64) string {
	t.Helper()
	b, err := bundle.New(w.ev, chain, version).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return w.write(t, "bundle.json", b)
}

// next signs a v3 changed by mutate with the world's ceremony.
func (w *verifyWorld) next(t *testing.T, mutate func(*trustroot.Root)) []byte {
	t.Helper()
	v3 := *w.roots[1]
	v3.Version = 3
	v3.SigningKeys = slices.Clone(v3.SigningKeys)
	mutate(&v3)
	return w.ceremony.Sign(t, &v3)
}

func TestVerifyCommand(t *testing.T) {
	tests := []struct {
		name string
		// setup returns the pinned root (nil: none), the bundle's chain
		// and version, and changes the world if needed.
		setup    func(t *testing.T, w *verifyWorld) (pinned []byte, chain [][]byte, version int64)
		wantCode int
		want     string
		// selfOnly passes --self-consistency-only.
		selfOnly bool
	}{
		{name: "walks from the pinned v1 to the bundle's v2", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			return w.envs[0], w.envs, 2
		}, want: "signed by an artifact key of trust root v2"},
		{name: "pinned newer than the bundle", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			return w.envs[1], w.envs[:1], 1
		}, want: "trust root v2"},
		{name: "rollback: the bundle's older root lists a key the pinned one dropped", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			v3 := w.next(t, func(r *trustroot.Root) { r.SigningKeys = nil })
			return v3, w.envs, 2
		}, wantCode: ExitDenied, want: "is not an artifact key in trust root v3"},
		{name: "rollback: a second v2 in the bundle", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			forked := *w.roots[1]
			forked.Expires = forked.Expires.Add(time.Hour)
			forked.SigningKeys = nil
			return w.envs[1], [][]byte{w.ceremony.Sign(t, &forked)}, 2
		}, want: "trust root v2"},
		{name: "a root skipping a version", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			return w.envs[0], [][]byte{w.next(t, func(*trustroot.Root) {})}, 3
		}, wantCode: ExitDenied, want: "do not chain from the pinned v1: trust root version gap"},
		{name: "a root signed by other root keys", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			other := trustroottest.New(t, 1)
			forged := *w.roots[1]
			forged.RootKeys, forged.Threshold = other.Keys, 1
			return w.envs[0], [][]byte{other.Sign(t, &forged)}, 2
		}, wantCode: ExitDenied, want: "is not signed by the root keys of v1"},
		{name: "an expired root in the bundle", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			expired := *w.roots[1]
			expired.Expires = time.Now().Add(-time.Minute)
			return w.envs[0], [][]byte{w.ceremony.Sign(t, &expired)}, 2
		}, wantCode: ExitDenied, want: "trust root expired: v2 expired at"},
		{name: "an expired pinned root and nothing newer", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			expired := *w.roots[0]
			expired.Expires = time.Now().Add(-time.Minute)
			return w.ceremony.Sign(t, &expired), nil, 1
		}, wantCode: ExitDenied, want: "trust root v1 expired at"},
		{name: "a chain short of the version the bundle names", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			return w.envs[0], w.envs[:1], 2
		}, wantCode: ExitDenied, want: "was verified against trust root v2, but its chain reaches only v1"},
		{name: "signed by a key not in the trust root", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			rogue, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			w.ev.Envelope = resign(t, w.ev.Envelope, rogue)
			return w.envs[0], w.envs, 2
		}, wantCode: ExitDenied, want: "is not an artifact key in trust root v2"},
		{name: "key revoked in the bundle's newer root", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			at := time.Now().Add(-time.Minute).UTC()
			v3 := w.next(t, func(r *trustroot.Root) {
				r.SigningKeys[0].Status, r.SigningKeys[0].RevokedAt = trustroot.StatusRevoked, &at
			})
			return w.envs[0], append(slices.Clone(w.envs), v3), 3
		}, wantCode: ExitDenied, want: "was revoked at"},
		{name: "no pinned root: the bundle's own roots do not vouch for it", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			return nil, w.envs, 2
		}, wantCode: ExitDenied, want: "no pinned trust root: pass --trust-root"},
		{name: "no pinned root, a forged bundle with its own root", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			other := trustroottest.New(t, 1)
			forged := *w.roots[0]
			forged.RootKeys, forged.Threshold = other.Keys, 1
			return nil, [][]byte{other.Sign(t, &forged)}, 1
		}, wantCode: ExitDenied, want: "no pinned trust root"},
		{name: "self-consistency only: the bundle's own chain, said so", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			return nil, w.envs, 2
		}, selfOnly: true, want: "SELF-CONSISTENT ONLY"},
		{name: "self-consistency only passes a forged bundle with its own root, and says it proves nothing", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			other := trustroottest.New(t, 1)
			forged := *w.roots[0]
			forged.RootKeys, forged.Threshold = other.Keys, 1
			// The evidence is signed by the world's keys, which the
			// forged root still lists: only the root keys differ.
			return nil, [][]byte{other.Sign(t, &forged)}, 1
		}, selfOnly: true, want: "NOT verified against a pinned trust root"},
		{name: "self-consistency only still checks the signatures", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			rogue, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			w.ev.Envelope = resign(t, w.ev.Envelope, rogue)
			return nil, w.envs, 2
		}, selfOnly: true, wantCode: ExitDenied, want: "is not an artifact key in trust root v2"},
		{name: "self-consistency only with no root in the bundle", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			return nil, nil, 1
		}, selfOnly: true, wantCode: ExitDenied, want: "carries no trust root"},
		{name: "self-consistency only and a pinned root: refused, not silently one of them", setup: func(t *testing.T, w *verifyWorld) ([]byte, [][]byte, int64) {
			return w.envs[0], w.envs, 2
		}, selfOnly: true, wantCode: ExitError, want: "--self-consistency-only checks the bundle against its own roots"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newVerifyWorld(t)
			pinned, chain, version := tt.setup(t, w)
			args := []string{"verify", w.file, "--bundle", w.bundle(t, chain, version)}
			if tt.selfOnly {
				args = append(args, "--self-consistency-only")
			}
			if pinned != nil {
				args = append(args, "--trust-root", w.write(t, "root.json", pinned))
			}
			var out, errOut bytes.Buffer
			code := Execute(t.Context(), args, func(string) string { return "" }, &out, &errOut)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stdout %q, stderr %q", code, tt.wantCode, out.String(), errOut.String())
			}
			if got := out.String() + errOut.String(); !strings.Contains(got, tt.want) {
				t.Errorf("output %q does not contain %q", got, tt.want)
			}
			if pinned == nil && strings.Contains(out.String(), "OK ") {
				t.Errorf("OK printed without a pinned root: %q", out.String())
			}
		})
	}
}

func TestVerifyCommandDevDirDefault(t *testing.T) {
	w := newVerifyWorld(t)
	dev := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dev, "trust"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dev, "trust", "root.json"), w.envs[0], 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := Execute(t.Context(), []string{"verify", w.file, "--bundle", w.bundle(t, w.envs, 2), "--dev-dir", dev}, func(string) string { return "" }, &out, &errOut)
	if code != ExitOK || errOut.Len() != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
	// Other bytes than the bundle's artifact.
	if err := os.WriteFile(w.file, []byte("other bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := Execute(t.Context(), []string{"verify", w.file, "--bundle", filepath.Join(w.dir, "bundle.json"), "--dev-dir", dev}, func(string) string { return "" }, &out, &errOut); code != ExitDenied {
		t.Errorf("other bytes: exit %d, want %d", code, ExitDenied)
	}
}

// resign replaces an envelope's signature by one of key.
func resign(t *testing.T, envelope []byte, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	env, err := attest.ParseEnvelope(envelope)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := attest.KeyID(&key.PublicKey)
	b, err := attest.SignEnvelope(env.PayloadType, env.Payload, id, func(pae []byte) ([]byte, error) {
		h := sha256.Sum256(pae)
		return ecdsa.SignASN1(rand.Reader, key, h[:])
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
