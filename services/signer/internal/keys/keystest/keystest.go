// Package keystest is the conformance suite every key back end passes.
package keystest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/services/signer/internal/keys"
)

// Options describe the back end under test.
type Options struct {
	// New returns a back end to test, with no keys whose names start with
	// prefix. It is called once per subtest.
	New func(t *testing.T) keys.Backend
	// Prefix makes key names unique when back ends share state between
	// subtests (a Vault server, an HSM token).
	Prefix string
	// Algorithms the back end must support; default both.
	Algorithms []string
}

// Run runs the suite.
func Run(t *testing.T, o Options) {
	if len(o.Algorithms) == 0 {
		o.Algorithms = []string{keys.ECDSAP256, keys.Ed25519}
	}
	n := 0
	name := func(s string) string {
		n++
		return fmt.Sprintf("%s%s-%d", o.Prefix, s, n)
	}
	for _, alg := range o.Algorithms {
		t.Run(alg, func(t *testing.T) {
			t.Run("create, list and sign", func(t *testing.T) { createListSign(t, o.New(t), name("cls"), alg) })
			t.Run("rotate keeps old versions", func(t *testing.T) { rotate(t, o.New(t), name("rot"), alg) })
			t.Run("concurrent signing", func(t *testing.T) { concurrent(t, o.New(t), name("con"), alg) })
			t.Run("batch signing", func(t *testing.T) { batch(t, o.New(t), name("bat"), alg) })
		})
	}
	t.Run("errors", func(t *testing.T) { errorCases(t, o.New(t), name("err"), o.Algorithms[0]) })
}

func ctx(t *testing.T) context.Context { return t.Context() }

// verify checks sig over msg with v's public key.
func verify(t *testing.T, v keys.Version, msg, sig []byte) error {
	t.Helper()
	pub, alg, err := attest.ParsePublicKey(v.PublicDER)
	if err != nil {
		t.Fatalf("version %d of %s: public key: %v", v.Version, v.Name, err)
	}
	return attest.VerifySignature(attest.Key{ID: v.ID, Algorithm: alg, Public: pub}, msg, sig)
}

func checkVersion(t *testing.T, v keys.Version, name string, version int, alg string) {
	t.Helper()
	if v.Name != name || v.Version != version || v.Algorithm != alg {
		t.Fatalf("version = {%s v%d %s}, want {%s v%d %s}", v.Name, v.Version, v.Algorithm, name, version, alg)
	}
	pub, gotAlg, err := attest.ParsePublicKey(v.PublicDER)
	if err != nil {
		t.Fatalf("public key of %s v%d: %v", name, version, err)
	}
	if gotAlg != alg {
		t.Fatalf("public key of %s v%d is %s, want %s", name, version, gotAlg, alg)
	}
	if id, _ := attest.KeyID(pub); id != v.ID {
		t.Fatalf("key id %s does not match the public key (%s)", v.ID, id)
	}
}

func createListSign(t *testing.T, b keys.Backend, name, alg string) {
	v, err := b.Create(ctx(t), name, alg)
	if err != nil {
		t.Fatalf("Create(%s, %s): %v", name, alg, err)
	}
	checkVersion(t, v, name, 1, alg)
	vs, err := b.Versions(ctx(t), name)
	if err != nil || len(vs) != 1 {
		t.Fatalf("Versions = %v, %v; want one", vs, err)
	}
	checkVersion(t, vs[0], name, 1, alg)
	if vs[0].ID != v.ID || !bytes.Equal(vs[0].PublicDER, v.PublicDER) {
		t.Fatal("Versions disagrees with Create")
	}
	for _, msg := range [][]byte{[]byte("hello"), {}, randomBytes(70_000)} {
		sig, err := b.Sign(ctx(t), name, 1, msg)
		if err != nil {
			t.Fatalf("Sign(%d bytes): %v", len(msg), err)
		}
		if err := verify(t, v, msg, sig); err != nil {
			t.Fatalf("signature over %d bytes: %v", len(msg), err)
		}
		if len(msg) > 0 {
			other := bytes.Clone(msg)
			other[0] ^= 1
			if verify(t, v, other, sig) == nil {
				t.Fatal("signature verifies over another message")
			}
		}
	}
	// A second handle sees the same key (state lives in the back end).
	if _, err := b.Create(ctx(t), name, alg); !errors.Is(err, keys.ErrExists) {
		t.Fatalf("second Create: %v, want ErrExists", err)
	}
}

func rotate(t *testing.T, b keys.Backend, name, alg string) {
	v1, err := b.Create(ctx(t), name, alg)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := b.Rotate(ctx(t), name)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	checkVersion(t, v2, name, 2, alg)
	if v2.ID == v1.ID {
		t.Fatal("rotation kept the same key")
	}
	v3, err := b.Rotate(ctx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := b.Versions(ctx(t), name)
	if err != nil || len(vs) != 3 {
		t.Fatalf("Versions = %d, %v; want 3", len(vs), err)
	}
	for i, want := range []keys.Version{v1, v2, v3} {
		if vs[i].Version != i+1 || vs[i].ID != want.ID {
			t.Fatalf("Versions[%d] = v%d %s, want v%d %s", i, vs[i].Version, vs[i].ID, i+1, want.ID)
		}
	}
	msg := []byte("statement")
	for _, v := range []keys.Version{v1, v2, v3} {
		sig, err := b.Sign(ctx(t), name, v.Version, msg)
		if err != nil {
			t.Fatalf("Sign with v%d: %v", v.Version, err)
		}
		if err := verify(t, v, msg, sig); err != nil {
			t.Fatalf("v%d signature: %v", v.Version, err)
		}
		for _, w := range []keys.Version{v1, v2, v3} {
			if w.Version != v.Version && verify(t, w, msg, sig) == nil {
				t.Fatalf("v%d signature verifies with v%d", v.Version, w.Version)
			}
		}
	}
}

func concurrent(t *testing.T, b keys.Backend, name, alg string) {
	v, err := b.Create(ctx(t), name, alg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 32*16)
	for g := range 32 {
		wg.Go(func() {
			for i := range 16 {
				msg := fmt.Appendf(nil, "message %d/%d", g, i)
				sig, err := b.Sign(ctx(t), name, 1, msg)
				if err == nil {
					err = verify(t, v, msg, sig)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func batch(t *testing.T, b keys.Backend, name, alg string) {
	bs, ok := b.(keys.BatchSigner)
	if !ok {
		t.Skipf("%s signs one message per call", b.Kind())
	}
	v, err := b.Create(ctx(t), name, alg)
	if err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	for i := range 50 {
		msgs = append(msgs, fmt.Appendf(nil, "batch message %d", i))
	}
	sigs, err := bs.SignBatch(ctx(t), name, 1, msgs)
	if err != nil || len(sigs) != len(msgs) {
		t.Fatalf("SignBatch = %d signatures, %v", len(sigs), err)
	}
	for i := range msgs {
		if err := verify(t, v, msgs[i], sigs[i]); err != nil {
			t.Fatalf("batch signature %d: %v", i, err)
		}
	}
}

func errorCases(t *testing.T, b keys.Backend, name, alg string) {
	for _, bad := range []string{"", "UPPER", "has space", "../escape", "1starts-with-digit", string(make([]byte, 65))} {
		if _, err := b.Create(ctx(t), bad, alg); !errors.Is(err, keys.ErrInvalid) {
			t.Errorf("Create(%q): %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := b.Create(ctx(t), name+"x", "rsa-2048"); !errors.Is(err, keys.ErrInvalid) {
		t.Errorf("Create with an unsupported algorithm: %v, want ErrInvalid", err)
	}
	if _, err := b.Versions(ctx(t), name+"-missing"); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("Versions of a missing key: %v, want ErrNotFound", err)
	}
	if _, err := b.Sign(ctx(t), name+"-missing", 1, []byte("m")); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("Sign with a missing key: %v, want ErrNotFound", err)
	}
	if _, err := b.Rotate(ctx(t), name+"-missing"); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("Rotate of a missing key: %v, want ErrNotFound", err)
	}
	if _, err := b.Create(ctx(t), name, alg); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int{0, 2, -1} {
		if _, err := b.Sign(ctx(t), name, v, []byte("m")); !errors.Is(err, keys.ErrNotFound) {
			t.Errorf("Sign with version %d of a one-version key: %v, want ErrNotFound", v, err)
		}
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
