package pkcs11

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/custody-dev/custody/services/signer/internal/keys"
)

func TestWrapUnwrapRewrapAcrossVersions(t *testing.T) {
	b := open(t, nil)
	name := prefix() + "kek"
	if _, _, err := b.WrapKey(t.Context(), name, randomBytes(32)); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("WrapKey before the KEK exists: %v, want ErrNotFound", err)
	}
	if v, err := b.EnsureWrappingKey(t.Context(), name); err != nil || v != 1 {
		t.Fatalf("EnsureWrappingKey = %d, %v; want 1", v, err)
	}
	if v, err := b.EnsureWrappingKey(t.Context(), name); err != nil || v != 1 {
		t.Fatalf("EnsureWrappingKey again = %d, %v; want 1 (no new version)", v, err)
	}
	dk := randomBytes(32)
	v1, w1, err := b.WrapKey(t.Context(), name, dk)
	if err != nil || v1 != 1 {
		t.Fatalf("WrapKey = %d, %v", v1, err)
	}
	_, w1b, _ := b.WrapKey(t.Context(), name, dk)
	if bytes.Equal(w1, w1b) || bytes.Contains(w1, dk) {
		t.Fatal("wrapping is not randomized, or the wrapped key holds the data key")
	}
	if got, err := b.UnwrapKey(t.Context(), name, 1, w1); err != nil || !bytes.Equal(got, dk) {
		t.Fatalf("UnwrapKey = %x, %v", got, err)
	}
	if v, err := b.RotateWrappingKey(t.Context(), name); err != nil || v != 2 {
		t.Fatalf("RotateWrappingKey = %d, %v; want 2", v, err)
	}
	if v, _, err := b.WrapKey(t.Context(), name, dk); err != nil || v != 2 {
		t.Fatalf("WrapKey after rotation = %d, %v; want version 2", v, err)
	}
	// Version 1's key presented as version 2's does not open: the version
	// label is additional data.
	if _, err := b.UnwrapKey(t.Context(), name, 2, w1); !errors.Is(err, keys.ErrBadWrappedKey) {
		t.Fatalf("UnwrapKey of a v1 key as v2: %v, want ErrBadWrappedKey", err)
	}
	v, w2, err := b.RewrapKey(t.Context(), name, 1, w1)
	if err != nil || v != 2 || bytes.Equal(w2, w1) {
		t.Fatalf("RewrapKey = %d, %v; want a new key under version 2", v, err)
	}
	if v, same, err := b.RewrapKey(t.Context(), name, 2, w2); err != nil || v != 2 || !bytes.Equal(same, w2) {
		t.Fatalf("RewrapKey of a key under the newest version = %d, %v; want it unchanged", v, err)
	}
	if err := b.DestroyWrappingKeyVersion(t.Context(), name, 2); !errors.Is(err, keys.ErrInvalid) {
		t.Fatalf("destroy the newest version: %v, want ErrInvalid", err)
	}
	if err := b.DestroyWrappingKeyVersion(t.Context(), name, 1); err != nil {
		t.Fatal(err)
	}
	if vs, err := b.WrappingKeyVersions(t.Context(), name); err != nil || len(vs) != 1 || vs[0] != 2 {
		t.Fatalf("versions after destroying 1 = %v, %v; want [2]", vs, err)
	}
	if got, err := b.UnwrapKey(t.Context(), name, 2, w2); err != nil || !bytes.Equal(got, dk) {
		t.Fatalf("UnwrapKey of the rewrapped key = %x, %v", got, err)
	}
	if _, err := b.UnwrapKey(t.Context(), name, 1, w1); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("UnwrapKey under a destroyed version: %v, want ErrNotFound", err)
	}
	if _, _, err := b.RewrapKey(t.Context(), name, 1, w1); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("RewrapKey under a destroyed version: %v, want ErrNotFound", err)
	}
	// Another KEK's key does not open either.
	other := prefix() + "kek"
	if _, err := b.EnsureWrappingKey(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	_, wo, _ := b.WrapKey(t.Context(), other, dk)
	if _, err := b.UnwrapKey(t.Context(), name, 2, wo); !errors.Is(err, keys.ErrBadWrappedKey) {
		t.Fatalf("UnwrapKey of another KEK's key: %v, want ErrBadWrappedKey", err)
	}
}

func TestUnwrapRejectsHostileInput(t *testing.T) {
	b := open(t, nil)
	name := prefix() + "kek"
	if _, err := b.EnsureWrappingKey(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	_, w, err := b.WrapKey(t.Context(), name, randomBytes(32))
	if err != nil {
		t.Fatal(err)
	}
	for i := range w {
		bad := bytes.Clone(w)
		bad[i] ^= 0x01
		if _, err := b.UnwrapKey(t.Context(), name, 1, bad); !errors.Is(err, keys.ErrBadWrappedKey) {
			t.Fatalf("byte %d flipped: %v, want ErrBadWrappedKey", i, err)
		}
	}
	for _, bad := range [][]byte{nil, w[:len(w)-1], w[:12+16+15], append(bytes.Clone(w), 0), make([]byte, MaxWrapped+1)} {
		if _, err := b.UnwrapKey(t.Context(), name, 1, bad); !errors.Is(err, keys.ErrBadWrappedKey) {
			t.Errorf("wrapped key of %d bytes: %v, want ErrBadWrappedKey", len(bad), err)
		}
	}
	for _, tc := range []struct {
		name    string
		version int
	}{{"", 1}, {"../x", 1}, {"Kek", 1}, {name, 0}, {name, -1}} {
		if _, err := b.UnwrapKey(t.Context(), tc.name, tc.version, w); !errors.Is(err, keys.ErrInvalid) {
			t.Errorf("UnwrapKey(%q, %d): %v, want ErrInvalid", tc.name, tc.version, err)
		}
	}
	if _, err := b.UnwrapKey(t.Context(), name, 7, w); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("UnwrapKey under a version that never existed: %v, want ErrNotFound", err)
	}
	for _, n := range []int{0, 15, 65, 1 << 20} {
		if _, _, err := b.WrapKey(t.Context(), name, make([]byte, n)); !errors.Is(err, keys.ErrInvalid) {
			t.Errorf("WrapKey of %d bytes: %v, want ErrInvalid", n, err)
		}
	}
	// A signing key's name is not a KEK: labels keep them apart.
	sign := prefix() + "sign"
	if _, err := b.Create(t.Context(), sign, keys.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.WrapKey(t.Context(), sign, randomBytes(32)); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("WrapKey with a signing key's name: %v, want ErrNotFound", err)
	}
}

func TestKEKStaysInTheToken(t *testing.T) {
	b := open(t, nil)
	name := prefix() + "kek"
	if _, err := b.EnsureWrappingKey(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	onSession(t, b, func(ctx *p11.Ctx, s *session) error {
		k, err := b.secretKey(s, kekLabel(name, 1))
		if err != nil {
			return err
		}
		attrs, err := ctx.GetAttributeValue(s.h, k.h, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_SENSITIVE, nil), p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
			p11.NewAttribute(p11.CKA_WRAP, nil), p11.NewAttribute(p11.CKA_MODIFIABLE, nil),
		})
		if err != nil {
			return err
		}
		if !isTrue(attrs[0].Value) || isTrue(attrs[1].Value) || isTrue(attrs[2].Value) || isTrue(attrs[3].Value) {
			t.Errorf("KEK attributes sensitive=%x extractable=%x wrap=%x modifiable=%x", attrs[0].Value, attrs[1].Value, attrs[2].Value, attrs[3].Value)
		}
		if _, err := ctx.GetAttributeValue(s.h, k.h, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)}); err == nil {
			t.Error("the token returned the KEK's CKA_VALUE")
		}
		return nil
	})
}

// The token goes away: wrapping fails closed with ErrUnavailable naming
// the token, and works again when it is back, without a restart.
func TestWrapRecoversWhenTokenReturns(t *testing.T) {
	b := open(t, func(c *Config) { c.RecoverInterval = 20 * time.Millisecond })
	name := prefix() + "kek"
	if _, err := b.EnsureWrappingKey(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	dk := randomBytes(32)
	_, w, err := b.WrapKey(t.Context(), name, dk)
	if err != nil {
		t.Fatal(err)
	}
	away := filepath.Join(filepath.Dir(filepath.Dir(hsm.tokenDir)), "token-away-kek")
	if err := os.Rename(hsm.tokenDir, away); err != nil {
		t.Fatal(err)
	}
	back := sync.OnceValue(func() error { return os.Rename(away, hsm.tokenDir) })
	t.Cleanup(func() { back() })
	for start := time.Now(); time.Since(start) < 100*time.Millisecond; time.Sleep(10 * time.Millisecond) {
		if _, _, err := b.WrapKey(t.Context(), name, dk); !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("WrapKey without the token: %v, want ErrUnavailable", err)
		}
		if _, err := b.UnwrapKey(t.Context(), name, 1, w); !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("UnwrapKey without the token: %v, want ErrUnavailable (not a bad key)", err)
		}
	}
	if err := back(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := b.UnwrapKey(t.Context(), name, 1, w)
		if err == nil {
			if !bytes.Equal(got, dk) {
				t.Fatal("unwrapped another key")
			}
			break
		}
		if !errors.Is(err, keys.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("UnwrapKey after the token returned: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
