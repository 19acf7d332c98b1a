package trustroot_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
)

var now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// world is a signing key, a log key and a ceremony of three root keys.
type world struct {
	c       *trustroottest.Ceremony
	signing trustroot.SigningKey
	logs    []trustroot.LogKey
}

func newWorld(t *testing.T) *world {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, vkey, err := tlog.GenerateKey("custody.test/log")
	if err != nil {
		t.Fatal(err)
	}
	return &world{
		c:       trustroottest.New(t, 3),
		signing: trustroottest.SigningKey(t, &priv.PublicKey, attest.PurposeArtifact, "artifact", 1, now.Add(-time.Hour)),
		logs:    []trustroot.LogKey{{Origin: "custody.test/log", VerifierKey: vkey}},
	}
}

func (w *world) root(v int64) *trustroot.Root {
	return w.c.Root(v, 2, now, []trustroot.SigningKey{w.signing}, w.logs)
}

func TestMarshalRoundTrip(t *testing.T) {
	w := newWorld(t)
	r := w.root(1)
	r.Expires = r.Expires.In(time.FixedZone("x", 3600))
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := trustroot.ParseUnsigned(b)
	if err != nil {
		t.Fatal(err)
	}
	again, err := got.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, again) {
		t.Errorf("Marshal is not canonical:\n%s\n%s", b, again)
	}
	if !got.Expires.Equal(r.Expires) || got.Expires.Location() != time.UTC {
		t.Errorf("expires %v, want %v in UTC", got.Expires, r.Expires)
	}
	if !bytes.Contains(b, []byte(`"edge_token_keys":[]`)) {
		t.Errorf("empty list not encoded as []: %s", b)
	}
}

func TestValidate(t *testing.T) {
	w := newWorld(t)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edge := trustroottest.SigningKey(t, edPub, attest.PurposeArtifact, "token", 1, now).Key
	until := now.Add(-2 * time.Hour)
	tests := []struct {
		name   string
		mutate func(*trustroot.Root)
		want   []string // empty: valid
	}{
		{"valid", func(*trustroot.Root) {}, nil},
		{"valid with an edge key and channels", func(r *trustroot.Root) {
			r.EdgeTokenKeys = []trustroot.EdgeTokenKey{{Key: edge, ValidFrom: &until, ValidUntil: &now}}
			r.SigningKeys[0].Channels = []string{"prod"}
		}, nil},
		{"everything wrong at once", func(r *trustroot.Root) {
			r.Type, r.Version, r.Expires, r.Threshold = "v0", 0, time.Time{}, 0
		}, []string{"type", "version 0", "expires is missing", "threshold 0"}},
		{"threshold above keys", func(r *trustroot.Root) { r.Threshold = 4 }, []string{"threshold 4"}},
		{"no root keys", func(r *trustroot.Root) { r.RootKeys = nil }, []string{"no root keys"}},
		{"duplicate root key", func(r *trustroot.Root) { r.RootKeys = append(r.RootKeys, r.RootKeys[0]) }, []string{"listed twice"}},
		{"key id not the key's", func(r *trustroot.Root) { r.RootKeys[0].ID = strings.Repeat("0", 64) }, []string{"is not the key's id"}},
		{"algorithm not the key's", func(r *trustroot.Root) { r.SigningKeys[0].Algorithm = attest.AlgEd25519 }, []string{"listed as"}},
		{"garbage key", func(r *trustroot.Root) { r.SigningKeys[0].PublicKey = []byte{1, 2} }, []string{"parse public key"}},
		{"unknown purpose", func(r *trustroot.Root) { r.SigningKeys[0].Purpose = "x" }, []string{"purpose"}},
		{"decision key with channels", func(r *trustroot.Root) {
			r.SigningKeys[0].Purpose, r.SigningKeys[0].Channels = attest.PurposeDecision, []string{"prod"}
		}, []string{"decision key has no channels"}},
		{"revoked without time", func(r *trustroot.Root) { r.SigningKeys[0].Status = trustroot.StatusRevoked }, []string{"without revoked_at"}},
		{"active with revocation", func(r *trustroot.Root) { r.SigningKeys[0].RevokedAt = &now }, []string{"with a revoked_at"}},
		{"unknown status", func(r *trustroot.Root) { r.SigningKeys[0].Status = "current" }, []string{"status"}},
		{"window ends before it starts", func(r *trustroot.Root) { r.SigningKeys[0].ValidUntil = &until }, []string{"valid_until"}},
		{"no name", func(r *trustroot.Root) { r.SigningKeys[0].Name = "" }, []string{"name and a version"}},
		{"same version twice", func(r *trustroot.Root) {
			priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			r.SigningKeys = append(r.SigningKeys, trustroottest.SigningKey(t, &priv.PublicKey, attest.PurposeArtifact, "artifact", 1, now))
		}, []string{"artifact/v1 listed twice"}},
		{"bad log key", func(r *trustroot.Root) { r.LogKeys[0].VerifierKey = "nope" }, []string{"not a note verifier key"}},
		{"duplicate log origin", func(r *trustroot.Root) { r.LogKeys = append(r.LogKeys, r.LogKeys[0]) }, []string{"listed twice"}},
		{"ECDSA edge key", func(r *trustroot.Root) { r.EdgeTokenKeys = []trustroot.EdgeTokenKey{{Key: r.SigningKeys[0].Key}} }, []string{"edge tokens are ed25519"}},
		{"edge key window ends before it starts", func(r *trustroot.Root) {
			r.EdgeTokenKeys = []trustroot.EdgeTokenKey{{Key: edge, ValidFrom: &now, ValidUntil: &until}}
		}, []string{"edge token key", "valid_until is not after valid_from"}},
		{"duplicate edge key", func(r *trustroot.Root) {
			r.EdgeTokenKeys = []trustroot.EdgeTokenKey{{Key: edge}, {Key: edge, ValidUntil: &now}}
		}, []string{"edge token key", "listed twice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := w.root(1)
			r.RootKeys = append([]trustroot.Key(nil), r.RootKeys...)
			tt.mutate(r)
			err := r.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if !errors.Is(err, trustroot.ErrMalformed) {
				t.Fatalf("Validate = %v, want ErrMalformed", err)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Validate = %v, does not mention %q", err, want)
				}
			}
		})
	}
}

func TestParseUnsignedStrict(t *testing.T) {
	w := newWorld(t)
	good, err := w.root(1).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]string{
		"unknown field": strings.Replace(string(good), `{"type"`, `{"x":1,"type"`, 1),
		"trailing data": string(good) + "{}",
		"not JSON":      "root",
		"oversize":      string(good) + strings.Repeat(" ", trustroot.MaxSize),
		"invalid root":  strings.Replace(string(good), `"threshold":2`, `"threshold":9`, 1),
		// Accepted before the one strict decoder:
		"trailing bracket": string(good) + "]",
		"trailing brace":   string(good) + "}",
		"field case":       strings.Replace(string(good), `{"type"`, `{"Type"`, 1),
		"duplicate key":    strings.Replace(string(good), `"threshold":2`, `"threshold":2,"threshold":1`, 1),
	} {
		if _, err := trustroot.ParseUnsigned([]byte(in)); !errors.Is(err, trustroot.ErrMalformed) {
			t.Errorf("%s: ParseUnsigned = %v, want ErrMalformed", name, err)
		}
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, good, "", "  "); err != nil {
		t.Fatal(err)
	}
	if _, err := trustroot.ParseUnsigned(indented.Bytes()); err != nil {
		t.Errorf("indented draft: %v", err)
	}
}

func TestVerifyThreshold(t *testing.T) {
	w := newWorld(t)
	r := w.root(1)
	other := trustroottest.New(t, 1)
	twoOfThree := w.c.Sign(t, r, 0, 2)
	tests := []struct {
		name     string
		envelope func(t *testing.T) []byte
		want     error
	}{
		{"two of three", func(*testing.T) []byte { return twoOfThree }, nil},
		{"all three", func(t *testing.T) []byte { return w.c.Sign(t, r) }, nil},
		{"one of three (k-1)", func(t *testing.T) []byte { return w.c.Sign(t, r, 1) }, trustroot.ErrThreshold},
		{"one key twice", func(t *testing.T) []byte { return duplicateSignature(t, w.c.Sign(t, r, 1)) }, trustroot.ErrThreshold},
		{"one root key and a key that is not a root key", func(t *testing.T) []byte {
			return addForeignSignature(t, w.c.Sign(t, r, 1), other)
		}, trustroot.ErrThreshold},
		{"tampered payload", func(t *testing.T) []byte { return tamper(t, twoOfThree) }, trustroot.ErrThreshold},
		{"other payload type", func(t *testing.T) []byte {
			return bytes.Replace(twoOfThree, []byte(trustroot.PayloadType), []byte(attest.PayloadType), 1)
		}, trustroot.ErrMalformed},
		{"not canonical", func(t *testing.T) []byte {
			env, _ := attest.ParseEnvelope(twoOfThree)
			var ind bytes.Buffer
			_ = json.Indent(&ind, env.Payload, "", " ")
			env.Payload = ind.Bytes()
			b, _ := env.Marshal()
			return b
		}, trustroot.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := trustroot.VerifyThreshold(tt.envelope(t), w.c.Keys, 2)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("VerifyThreshold = %v, want %v", err, tt.want)
			}
			if err == nil && got.Version != 1 {
				t.Errorf("version %d", got.Version)
			}
		})
	}
	if _, err := trustroot.VerifyThreshold(twoOfThree, w.c.Keys, 0); !errors.Is(err, trustroot.ErrThreshold) {
		t.Errorf("threshold 0: %v, want ErrThreshold", err)
	}
}

func TestSign(t *testing.T) {
	w := newWorld(t)
	r := w.root(1)
	draft, _ := r.Marshal()
	var indented bytes.Buffer
	_ = json.Indent(&indented, draft, "", "  ")
	env, err := trustroot.Sign(indented.Bytes(), w.c.Signers[0])
	if err != nil {
		t.Fatal(err)
	}
	if again, err := trustroot.Sign(env, w.c.Signers[0]); err != nil || countSigs(t, again) != 1 {
		t.Errorf("signing twice with one key: %d signatures, %v; want 1 (replaced)", countSigs(t, again), err)
	}
	env, err = trustroot.Sign(env, w.c.Signers[1])
	if err != nil || countSigs(t, env) != 2 {
		t.Fatalf("second signature: %v", err)
	}
	got, err := trustroot.Parse(env)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("signed root (-want +got):\n%s", diff)
	}
	if _, err := trustroot.Sign(draft, trustroottest.New(t, 1).Signers[0]); err == nil || !strings.Contains(err.Error(), "not one of its root keys") {
		t.Errorf("Sign with a key that is not a root key: %v", err)
	}
	if _, err := trustroot.Sign([]byte(`{"payloadType":"x"}`), w.c.Signers[0]); !errors.Is(err, trustroot.ErrMalformed) {
		t.Errorf("Sign of a bad envelope: %v", err)
	}
	ed, err := trustroot.GenerateKey(attest.AlgEd25519)
	if err != nil {
		t.Fatal(err)
	}
	edKey, _ := trustroot.PublicKey(ed)
	r.RootKeys, r.Threshold = []trustroot.Key{edKey}, 1
	edDraft, _ := r.Marshal()
	edEnv, err := trustroot.Sign(edDraft, ed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trustroot.Pin(edEnv); err != nil {
		t.Errorf("Ed25519-signed root: %v", err)
	}
}

// chain is v1 by keys A B C (2 of 3), v2 the same keys, v3 rotating to keys
// D E (2 of 2), signed by the old threshold and the new.
type chain struct {
	w        *world
	next     *trustroottest.Ceremony
	roots    []*trustroot.Root
	versions [][]byte // versions[i] is v(i+1)
}

func newChain(t *testing.T) *chain {
	w := newWorld(t)
	c := &chain{w: w, next: trustroottest.New(t, 2)}
	v1, v2 := w.root(1), w.root(2)
	v3 := c.next.Root(3, 2, now, v2.SigningKeys, v2.LogKeys)
	c.roots = []*trustroot.Root{v1, v2, v3}
	c.versions = [][]byte{w.c.Sign(t, v1, 0, 1), w.c.Sign(t, v2, 1, 2), c.rotation(t, []int{0, 2}, []int{0, 1})}
	return c
}

// rotation returns v3 signed by the old keys at old and the new at new.
func (c *chain) rotation(t *testing.T, old, new []int) []byte {
	t.Helper()
	env, err := c.roots[2].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range old {
		if env, err = trustroot.SignWith(env, c.w.c.Signers[i], c.roots[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range new {
		if env, err = trustroot.Sign(env, c.next.Signers[i]); err != nil {
			t.Fatal(err)
		}
	}
	return env
}

func TestSignWithPrevious(t *testing.T) {
	c := newChain(t)
	draft, err := c.roots[2].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trustroot.Sign(draft, c.w.c.Signers[0]); err == nil || !strings.Contains(err.Error(), "give the previous version") {
		t.Errorf("Sign of v3 with a v2 root key: %v, want a refusal pointing at the previous version", err)
	}
	if _, err := trustroot.SignWith(draft, c.w.c.Signers[0], c.roots[0]); err == nil || !strings.Contains(err.Error(), "want v2") {
		t.Errorf("SignWith v1 as the previous of v3: %v", err)
	}
	if _, err := trustroot.SignWith(draft, trustroottest.New(t, 1).Signers[0], c.roots[1]); err == nil {
		t.Error("SignWith accepted a key of neither version")
	}
}

func TestUpdateChainAcrossRootKeyRotation(t *testing.T) {
	c := newChain(t)
	tr, err := trustroot.Pin(c.versions[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.UpdateChain(c.versions, now); err != nil {
		t.Fatal(err)
	}
	if tr.Version() != 3 || !bytes.Equal(tr.Envelope(), c.versions[2]) {
		t.Fatalf("at v%d, want v3", tr.Version())
	}
	got, err := tr.Current(now)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c.next.Keys, got.RootKeys); diff != "" {
		t.Errorf("root keys after rotation (-want +got):\n%s", diff)
	}
	// Applying the chain again changes nothing.
	if err := tr.UpdateChain(c.versions, now); err != nil || tr.Version() != 3 {
		t.Errorf("chain again: v%d, %v", tr.Version(), err)
	}
}

func TestUpdateRefuses(t *testing.T) {
	c := newChain(t)
	other := c.w.root(2)
	other.Expires = other.Expires.Add(time.Hour)
	tests := []struct {
		name string
		// offer returns what is offered to a Trusted at v2.
		offer func(t *testing.T) []byte
		want  error
	}{
		{"rollback to v1", func(*testing.T) []byte { return c.versions[0] }, trustroot.ErrRollback},
		{"another v2", func(t *testing.T) []byte { return c.w.c.Sign(t, other, 0, 1) }, trustroot.ErrRollback},
		{"skip to v4", func(t *testing.T) []byte {
			v4 := c.next.Root(4, 2, now, nil, nil)
			return c.next.Sign(t, v4)
		}, trustroot.ErrVersionGap},
		{"rotation without the old threshold", func(t *testing.T) []byte { return c.rotation(t, []int{0}, []int{0, 1}) }, trustroot.ErrThreshold},
		{"rotation without the new threshold", func(t *testing.T) []byte { return c.rotation(t, []int{0, 1}, []int{1}) }, trustroot.ErrThreshold},
		{"rotation signed by the new keys only", func(t *testing.T) []byte { return c.rotation(t, nil, []int{0, 1}) }, trustroot.ErrThreshold},
		{"expired v3", func(t *testing.T) []byte { return expiredV3(t, c) }, trustroot.ErrExpired},
		{"tampered v3", func(t *testing.T) []byte { return tamper(t, c.versions[2]) }, trustroot.ErrThreshold},
		{"garbage", func(*testing.T) []byte { return []byte("{") }, trustroot.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := trustroot.Pin(c.versions[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := tr.Update(c.versions[1], now); err != nil {
				t.Fatal(err)
			}
			err = tr.Update(tt.offer(t), now)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Update = %v, want %v", err, tt.want)
			}
			if tr.Version() != 2 || !bytes.Equal(tr.Envelope(), c.versions[1]) {
				t.Errorf("after a refused update: v%d, want v2 unchanged", tr.Version())
			}
			if err := tr.Update(c.versions[1], now); err != nil {
				t.Errorf("the current envelope again: %v, want nil", err)
			}
		})
	}
}

func expiredV3(t *testing.T, c *chain) []byte {
	t.Helper()
	v3 := *c.roots[2]
	v3.Expires = now.Add(-time.Second)
	env, err := v3.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range c.w.c.Signers[:2] {
		if env, err = trustroot.SignWith(env, s, c.roots[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range c.next.Signers {
		if env, err = trustroot.Sign(env, s); err != nil {
			t.Fatal(err)
		}
	}
	return env
}

func TestPinAndFreeze(t *testing.T) {
	c := newChain(t)
	if _, err := trustroot.Pin(c.w.c.Sign(t, c.roots[0], 2)); !errors.Is(err, trustroot.ErrThreshold) {
		t.Errorf("pin below its threshold: %v, want ErrThreshold", err)
	}
	tr, err := trustroot.Pin(c.versions[0])
	if err != nil {
		t.Fatal(err)
	}
	late := c.roots[0].Expires
	if _, err := tr.Current(late); !errors.Is(err, trustroot.ErrExpired) || !strings.Contains(err.Error(), "v1 expired at") {
		t.Errorf("Current after expiry = %v, want ErrExpired naming v1", err)
	}
	if _, err := tr.Current(late.Add(-time.Second)); err != nil {
		t.Errorf("Current just before expiry: %v", err)
	}
	// An expired pinned root still leads to a fresh one.
	expired := *c.roots[0]
	expired.Expires = now.Add(-time.Minute)
	tr, err = trustroot.Pin(c.w.c.Sign(t, &expired))
	if err != nil {
		t.Fatalf("pin an expired root: %v", err)
	}
	if _, err := tr.Current(now); !errors.Is(err, trustroot.ErrExpired) {
		t.Errorf("Current of an expired pin: %v", err)
	}
	if err := tr.Update(c.versions[1], now); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Current(now); err != nil {
		t.Errorf("Current after moving past an expired pin: %v", err)
	}
}

func TestUpdateChainStopsAtFirstRefusal(t *testing.T) {
	c := newChain(t)
	tr, _ := trustroot.Pin(c.versions[0])
	err := tr.UpdateChain([][]byte{c.versions[1], tamper(t, c.versions[2])}, now)
	if !errors.Is(err, trustroot.ErrThreshold) || tr.Version() != 2 {
		t.Errorf("UpdateChain = %v at v%d, want ErrThreshold at v2", err, tr.Version())
	}
	if err := tr.UpdateChain([][]byte{c.versions[2][:10]}, now); !errors.Is(err, trustroot.ErrMalformed) {
		t.Errorf("UpdateChain(garbage) = %v", err)
	}
}

func TestTrustedConcurrent(t *testing.T) {
	c := newChain(t)
	tr, _ := trustroot.Pin(c.versions[0])
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := tr.UpdateChain(c.versions, now); err != nil {
				t.Error(err)
			}
			if _, err := tr.Current(now); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if tr.Version() != 3 {
		t.Errorf("v%d", tr.Version())
	}
}

func TestCheckSignedAt(t *testing.T) {
	w := newWorld(t)
	r := w.root(1)
	from := w.signing.ValidFrom
	until := from.Add(48 * time.Hour)
	revoked := from.Add(24 * time.Hour)
	tests := []struct {
		name   string
		mutate func(*trustroot.SigningKey)
		at     time.Time
		want   error
		msg    string
	}{
		{"in window", func(*trustroot.SigningKey) {}, from.Add(time.Minute), nil, ""},
		{"at valid_from", func(*trustroot.SigningKey) {}, from, nil, ""},
		{"before valid_from", func(*trustroot.SigningKey) {}, from.Add(-time.Second), trustroot.ErrKeyNotValid, "is valid from " + from.Format(time.RFC3339)},
		{"retired, within window", func(k *trustroot.SigningKey) { k.Status, k.ValidUntil = trustroot.StatusRetired, &until }, until, nil, ""},
		{"after valid_until", func(k *trustroot.SigningKey) { k.Status, k.ValidUntil = trustroot.StatusRetired, &until }, until.Add(time.Second), trustroot.ErrKeyNotValid, "was valid until"},
		{"before revocation", func(k *trustroot.SigningKey) { k.Status, k.RevokedAt = trustroot.StatusRevoked, &revoked }, revoked.Add(-time.Second), nil, ""},
		{"at revocation", func(k *trustroot.SigningKey) { k.Status, k.RevokedAt = trustroot.StatusRevoked, &revoked }, revoked, trustroot.ErrKeyNotValid, "revoked at " + revoked.Format(time.RFC3339)},
		{"after revocation", func(k *trustroot.SigningKey) { k.Status, k.RevokedAt = trustroot.StatusRevoked, &revoked }, revoked.Add(time.Hour), trustroot.ErrKeyNotValid, "artifact artifact v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.SigningKeys = []trustroot.SigningKey{w.signing}
			tt.mutate(&r.SigningKeys[0])
			if err := r.Validate(); err != nil {
				t.Fatal(err)
			}
			err := r.CheckSignedAt(w.signing.ID, tt.at)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("CheckSignedAt = %v, want %v", err, tt.want)
			}
			if err != nil && !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("CheckSignedAt = %v, want it to say %q", err, tt.msg)
			}
		})
	}
	err := r.CheckSignedAt("feed", now)
	if !errors.Is(err, trustroot.ErrUnknownKey) || !strings.Contains(err.Error(), "not in trust root v1") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestLookups(t *testing.T) {
	w := newWorld(t)
	r := w.root(1)
	if keys := r.Keys(attest.PurposeArtifact); len(keys) != 1 || keys[0].ID != w.signing.ID || keys[0].Purpose != attest.PurposeArtifact {
		t.Errorf("Keys(artifact) = %+v", keys)
	}
	if keys := r.Keys(attest.PurposeDecision); len(keys) != 0 {
		t.Errorf("Keys(decision) = %+v", keys)
	}
	if k, ok := r.SigningKey(w.signing.ID); !ok || k.Name != "artifact" {
		t.Errorf("SigningKey = %+v, %v", k, ok)
	}
	if _, ok := r.SigningKey("x"); ok {
		t.Error("SigningKey(x) found")
	}
	if v, ok := r.LogVerifier("custody.test/log"); !ok || v != w.logs[0].VerifierKey {
		t.Errorf("LogVerifier = %q, %v", v, ok)
	}
	if _, ok := r.LogVerifier("other/log"); ok {
		t.Error("LogVerifier(other) found")
	}
}

func TestPrivateKeys(t *testing.T) {
	for _, alg := range []string{attest.AlgECDSAP256, attest.AlgEd25519} {
		t.Run(alg, func(t *testing.T) {
			s, err := trustroot.GenerateKey(alg)
			if err != nil {
				t.Fatal(err)
			}
			pemBytes, err := trustroot.MarshalPrivateKey(s)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "root.key")
			if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(path)
			back, err := trustroot.ParsePrivateKey(b)
			if err != nil {
				t.Fatal(err)
			}
			k1, _ := trustroot.PublicKey(s)
			k2, err := trustroot.PublicKey(back)
			if err != nil || !cmp.Equal(k1, k2) || k1.Algorithm != alg {
				t.Errorf("round trip: %+v vs %+v (%v)", k1, k2, err)
			}
		})
	}
	if _, err := trustroot.GenerateKey("rsa"); err == nil {
		t.Error("GenerateKey(rsa) succeeded")
	}
	if _, err := trustroot.ParsePrivateKey([]byte("-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n")); err == nil {
		t.Error("ParsePrivateKey of a public key succeeded")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := trustroot.MarshalPrivateKey(p384); err == nil {
		t.Error("MarshalPrivateKey(P-384) succeeded")
	}
}

type envelopeJSON struct {
	PayloadType string `json:"payloadType"`
	Payload     string `json:"payload"`
	Signatures  []struct {
		KeyID string `json:"keyid"`
		Sig   string `json:"sig"`
	} `json:"signatures"`
}

func decodeEnvelope(t *testing.T, b []byte) envelopeJSON {
	t.Helper()
	var e envelopeJSON
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func encode(t *testing.T, e envelopeJSON) []byte {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func countSigs(t *testing.T, b []byte) int { return len(decodeEnvelope(t, b).Signatures) }

func duplicateSignature(t *testing.T, b []byte) []byte {
	e := decodeEnvelope(t, b)
	e.Signatures = append(e.Signatures, e.Signatures[0])
	return encode(t, e)
}

// addForeignSignature adds a valid signature by a key that is not a root
// key of the envelope's root.
func addForeignSignature(t *testing.T, b []byte, other *trustroottest.Ceremony) []byte {
	e := decodeEnvelope(t, b)
	payload, _ := base64.StdEncoding.DecodeString(e.Payload)
	sig, err := attest.SignEnvelope(trustroot.PayloadType, payload, other.Keys[0].ID, func(pae []byte) ([]byte, error) {
		sum := sha256.Sum256(pae)
		return other.Signers[0].Sign(rand.Reader, sum[:], crypto.SHA256)
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Signatures = append(e.Signatures, decodeEnvelope(t, sig).Signatures...)
	return encode(t, e)
}

// tamper extends the expiry in the payload, keeping the signatures and
// the canonical form.
func tamper(t *testing.T, b []byte) []byte {
	e := decodeEnvelope(t, b)
	payload, _ := base64.StdEncoding.DecodeString(e.Payload)
	r, err := trustroot.ParseUnsigned(payload)
	if err != nil {
		t.Fatal(err)
	}
	r.Expires = r.Expires.Add(24 * time.Hour)
	p, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	e.Payload = base64.StdEncoding.EncodeToString(p)
	return encode(t, e)
}

func TestSignsChannel(t *testing.T) {
	r := &trustroot.Root{Version: 3, SigningKeys: []trustroot.SigningKey{
		{Key: trustroot.Key{ID: "default"}, Purpose: attest.PurposeArtifact, Name: "artifact"},
		{Key: trustroot.Key{ID: "prod"}, Purpose: attest.PurposeArtifact, Name: "artifact-prod", Channels: []string{"prod"}},
		{Key: trustroot.Key{ID: "decision"}, Purpose: attest.PurposeDecision, Name: "decision"},
	}}
	for _, tc := range []struct {
		key, channel string
		want         bool
	}{
		{"default", "staging", true},
		{"default", "prod", false}, // prod has a key of its own
		{"prod", "prod", true},
		{"prod", "staging", false},
	} {
		k, _ := r.SigningKey(tc.key)
		if got := r.SignsChannel(k, tc.channel); got != tc.want {
			t.Errorf("SignsChannel(%s, %s) = %v, want %v", tc.key, tc.channel, got, tc.want)
		}
		if err := r.ChannelError(k, tc.channel); (err == nil) != tc.want || err != nil && !errors.Is(err, trustroot.ErrKeyNotValid) {
			t.Errorf("ChannelError(%s, %s) = %v", tc.key, tc.channel, err)
		}
	}
}
