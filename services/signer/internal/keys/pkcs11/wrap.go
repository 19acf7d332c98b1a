package pkcs11

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strings"

	p11 "github.com/miekg/pkcs11"

	"github.com/custody-dev/custody/services/signer/internal/keys"
)

// Key-encryption keys (decision 0059): each version of KEK name is an
// AES-256 token secret key labelled "kek/<name>/v<N>" (CKA_LABEL and
// CKA_ID), sensitive, not extractable, not modifiable, usable only to
// encrypt and decrypt. Key names cannot hold '/', so these labels never
// meet the signing keys' "<name>/v<N>". A data key is wrapped as
// IV ‖ AES-GCM(data key) with a random 96-bit IV chosen here and, as
// additional data, the label of the version that wrapped it, so a wrapped
// key presented under another version or KEK does not open.

const (
	gcmIVSize  = 12
	gcmTagBits = 128
	kekPrefix  = "kek/"
	aadPrefix  = "custody.dev/kek\x00"
)

// MaxWrapped is the largest wrapped data key: IV, the largest data key,
// tag.
const MaxWrapped = gcmIVSize + keys.MaxDataKey + gcmTagBits/8

func kekLabel(name string, version int) string { return kekPrefix + versionLabel(name, version) }

// EnsureWrappingKey makes version 1 of KEK name unless the token holds a
// version already, and returns the newest version.
func (b *Backend) EnsureWrappingKey(ctx context.Context, name string) (int, error) {
	if !keys.ValidName(name) {
		return 0, fmt.Errorf("%w: pkcs11: KEK name %q", keys.ErrInvalid, name)
	}
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	var newest int
	err := b.with(ctx, func(s *session) error {
		vs, err := b.kekVersions(s, name)
		if err != nil {
			return err
		}
		if len(vs) > 0 {
			newest = vs[len(vs)-1]
			return nil
		}
		newest = 1
		return b.generateKEK(s, name, 1)
	})
	if err != nil {
		return 0, b.wrap(err, "create KEK %q", name)
	}
	return newest, nil
}

// RotateWrappingKey adds version N+1 to KEK name; it wraps from now on.
func (b *Backend) RotateWrappingKey(ctx context.Context, name string) (int, error) {
	if !keys.ValidName(name) {
		return 0, fmt.Errorf("%w: pkcs11: KEK name %q", keys.ErrInvalid, name)
	}
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	var n int
	err := b.with(ctx, func(s *session) error {
		vs, err := b.kekVersions(s, name)
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			return fmt.Errorf("%w: pkcs11: KEK %q is not on token %q", keys.ErrNotFound, name, b.cfg.TokenLabel)
		}
		n = vs[len(vs)-1] + 1
		return b.generateKEK(s, name, n)
	})
	if err != nil {
		return 0, b.wrap(err, "rotate KEK %q", name)
	}
	return n, nil
}

// WrappingKeyVersions lists the versions of KEK name on the token, oldest
// first; keys.ErrNotFound if there is none.
func (b *Backend) WrappingKeyVersions(ctx context.Context, name string) ([]int, error) {
	if !keys.ValidName(name) {
		return nil, fmt.Errorf("%w: pkcs11: KEK name %q", keys.ErrInvalid, name)
	}
	var vs []int
	err := b.with(ctx, func(s *session) error {
		var err error
		vs, err = b.kekVersions(s, name)
		if err == nil && len(vs) == 0 {
			err = fmt.Errorf("%w: pkcs11: KEK %q is not on token %q", keys.ErrNotFound, name, b.cfg.TokenLabel)
		}
		return err
	})
	if err != nil {
		return nil, b.wrap(err, "list versions of KEK %q", name)
	}
	return vs, nil
}

// DestroyWrappingKeyVersion destroys version of KEK name. It refuses the
// newest version (keys.ErrInvalid): something must still wrap.
func (b *Backend) DestroyWrappingKeyVersion(ctx context.Context, name string, version int) error {
	if !keys.ValidName(name) {
		return fmt.Errorf("%w: pkcs11: KEK name %q", keys.ErrInvalid, name)
	}
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	label := kekLabel(name, version)
	err := b.with(ctx, func(s *session) error {
		vs, err := b.kekVersions(s, name)
		if err != nil {
			return err
		}
		switch {
		case !slices.Contains(vs, version):
			return fmt.Errorf("%w: pkcs11: KEK %q has no version %d on token %q", keys.ErrNotFound, name, version, b.cfg.TokenLabel)
		case version == vs[len(vs)-1]:
			return fmt.Errorf("%w: pkcs11: version %d is the newest of KEK %q: rotate first, rewrap, then destroy", keys.ErrInvalid, version, name)
		}
		k, err := b.secretKey(s, label)
		if err != nil {
			return err
		}
		b.handles.Delete(label)
		return b.mod.ctx.DestroyObject(s.h, k.h)
	})
	if err != nil {
		return b.wrap(err, "destroy KEK %q version %d", name, version)
	}
	return nil
}

// WrapKey encrypts dataKey under the newest version of KEK name and
// returns that version and IV ‖ ciphertext ‖ tag.
func (b *Backend) WrapKey(ctx context.Context, name string, dataKey []byte) (int, []byte, error) {
	if !keys.ValidName(name) {
		return 0, nil, fmt.Errorf("%w: pkcs11: KEK name %q", keys.ErrInvalid, name)
	}
	if len(dataKey) < keys.MinDataKey || len(dataKey) > keys.MaxDataKey {
		return 0, nil, fmt.Errorf("%w: pkcs11: a data key of %d bytes: want %d to %d", keys.ErrInvalid, len(dataKey), keys.MinDataKey, keys.MaxDataKey)
	}
	var version int
	var out []byte
	err := b.with(ctx, func(s *session) error {
		vs, err := b.kekVersions(s, name)
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			return fmt.Errorf("%w: pkcs11: KEK %q is not on token %q", keys.ErrNotFound, name, b.cfg.TokenLabel)
		}
		version = vs[len(vs)-1]
		out, err = b.seal(s, name, version, dataKey)
		return err
	})
	if err != nil {
		return 0, nil, b.wrap(err, "wrap a data key with KEK %q", name)
	}
	return version, out, nil
}

// UnwrapKey decrypts a key WrapKey returned under version of KEK name.
// A key that does not open is keys.ErrBadWrappedKey; a version the token
// does not hold, keys.ErrNotFound.
func (b *Backend) UnwrapKey(ctx context.Context, name string, version int, wrapped []byte) ([]byte, error) {
	if err := checkWrapped(name, version, wrapped); err != nil {
		return nil, err
	}
	var dk []byte
	err := b.with(ctx, func(s *session) error {
		var err error
		dk, err = b.open(s, name, version, wrapped)
		return err
	})
	if err != nil {
		return nil, b.wrap(err, "unwrap a data key with KEK %q version %d", name, version)
	}
	return dk, nil
}

// RewrapKey moves a wrapped key to the newest version of KEK name inside
// the signer; a key already under the newest version comes back as is.
func (b *Backend) RewrapKey(ctx context.Context, name string, version int, wrapped []byte) (int, []byte, error) {
	if err := checkWrapped(name, version, wrapped); err != nil {
		return 0, nil, err
	}
	newest, out := version, wrapped
	err := b.with(ctx, func(s *session) error {
		vs, err := b.kekVersions(s, name)
		if err != nil {
			return err
		}
		if len(vs) == 0 || !slices.Contains(vs, version) {
			return fmt.Errorf("%w: pkcs11: KEK %q has no version %d on token %q", keys.ErrNotFound, name, version, b.cfg.TokenLabel)
		}
		dk, err := b.open(s, name, version, wrapped)
		if err != nil {
			return err
		}
		defer clear(dk)
		if newest = vs[len(vs)-1]; newest == version {
			out = wrapped
			return nil
		}
		out, err = b.seal(s, name, newest, dk)
		return err
	})
	if err != nil {
		return 0, nil, b.wrap(err, "rewrap a data key of KEK %q version %d", name, version)
	}
	return newest, out, nil
}

func checkWrapped(name string, version int, wrapped []byte) error {
	switch {
	case !keys.ValidName(name):
		return fmt.Errorf("%w: pkcs11: KEK name %q", keys.ErrInvalid, name)
	case version < 1:
		return fmt.Errorf("%w: pkcs11: KEK version %d", keys.ErrInvalid, version)
	case len(wrapped) < gcmIVSize+keys.MinDataKey+gcmTagBits/8 || len(wrapped) > MaxWrapped:
		return fmt.Errorf("%w: pkcs11: a wrapped key of %d bytes", keys.ErrBadWrappedKey, len(wrapped))
	}
	return nil
}

func gcm(iv []byte, label string) ([]*p11.Mechanism, *p11.GCMParams) {
	params := p11.NewGCMParams(iv, []byte(aadPrefix+label), gcmTagBits)
	return []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, params
}

// seal encrypts dataKey under version of name on s.
func (b *Backend) seal(s *session, name string, version int, dataKey []byte) ([]byte, error) {
	label := kekLabel(name, version)
	k, err := b.secretKey(s, label)
	if err != nil {
		return nil, err
	}
	iv := make([]byte, gcmIVSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	mech, params := gcm(iv, label)
	defer params.Free()
	if err := b.mod.ctx.EncryptInit(s.h, mech, k.h); err != nil {
		return nil, err
	}
	ct, err := b.mod.ctx.Encrypt(s.h, dataKey)
	if err != nil {
		return nil, err
	}
	if len(ct) != len(dataKey)+gcmTagBits/8 {
		return nil, fmt.Errorf("token %q returned %d bytes of AES-GCM for a %d-byte key", b.cfg.TokenLabel, len(ct), len(dataKey))
	}
	return append(iv, ct...), nil
}

// open decrypts wrapped under version of name on s.
func (b *Backend) open(s *session, name string, version int, wrapped []byte) ([]byte, error) {
	label := kekLabel(name, version)
	k, err := b.secretKey(s, label)
	if err != nil {
		return nil, err
	}
	mech, params := gcm(wrapped[:gcmIVSize], label)
	defer params.Free()
	if err := b.mod.ctx.DecryptInit(s.h, mech, k.h); err != nil {
		return nil, err
	}
	dk, err := b.mod.ctx.Decrypt(s.h, wrapped[gcmIVSize:])
	if err != nil {
		// Tokens report a failed tag check in several ways (SoftHSM2:
		// CKR_GENERAL_ERROR or CKR_ENCRYPTED_DATA_INVALID). If the token
		// still answers, the wrapped key is at fault, and that is not
		// retried or taken for a lost token.
		if terr := b.checkToken(s); terr != nil {
			return nil, fmt.Errorf("%w (after %w)", terr, err)
		}
		return nil, fmt.Errorf("%w: under KEK %q version %d (%v)", keys.ErrBadWrappedKey, name, version, err)
	}
	return dk, nil
}

// kekVersions lists the versions of KEK name on the token, ascending.
func (b *Backend) kekVersions(s *session, name string) ([]int, error) {
	hs, err := b.find(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, true),
	}, 0)
	if err != nil {
		return nil, err
	}
	prefix := kekPrefix + name + "/v"
	var vs []int
	for _, h := range hs {
		attrs, err := b.mod.ctx.GetAttributeValue(s.h, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, nil)})
		if err != nil {
			return nil, err
		}
		label := string(attrs[0].Value)
		if n, ok := parseVersion(strings.TrimPrefix(label, prefix)); ok && strings.HasPrefix(label, prefix) {
			vs = append(vs, n)
		}
	}
	if len(vs) == 0 {
		return nil, b.checkToken(s)
	}
	slices.Sort(vs)
	for i := 1; i < len(vs); i++ {
		if vs[i] == vs[i-1] {
			return nil, fmt.Errorf("token %q has two secret keys labelled %q: remove the one that is not in use", b.cfg.TokenLabel, kekLabel(name, vs[i]))
		}
	}
	return vs, nil
}

// secretKey finds the KEK version labelled label, from the handle cache
// when it belongs to s's epoch and generation.
func (b *Backend) secretKey(s *session, label string) (keyRef, error) {
	if v, ok := b.handles.Load(label); ok {
		if k := v.(keyRef); k.epoch == s.epoch && k.gen == s.gen {
			return k, nil
		}
	}
	hs, err := b.find(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}, 2)
	if err != nil {
		return keyRef{}, err
	}
	switch len(hs) {
	case 0:
		if err := b.checkToken(s); err != nil {
			return keyRef{}, err
		}
		return keyRef{}, fmt.Errorf("%w: pkcs11: no KEK labelled %q on token %q", keys.ErrNotFound, label, b.cfg.TokenLabel)
	case 1:
	default:
		return keyRef{}, fmt.Errorf("token %q has two secret keys labelled %q: remove the one that is not in use", b.cfg.TokenLabel, label)
	}
	k := keyRef{h: hs[0], alg: "aes256-gcm", epoch: s.epoch, gen: s.gen}
	b.handles.Store(label, k)
	return k, nil
}

// generateKEK makes version n of KEK name and checks that the token
// honoured its protection.
func (b *Backend) generateKEK(s *session, name string, n int) error {
	ctx := b.mod.ctx
	label := kekLabel(name, n)
	h, err := ctx.GenerateKey(s.h, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_ID, []byte(label)),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_MODIFIABLE, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
		p11.NewAttribute(p11.CKA_DECRYPT, true),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	})
	if err != nil {
		return err
	}
	fail := func(err error) error {
		_ = ctx.DestroyObject(s.h, h)
		return noRetry{err}
	}
	attrs, err := ctx.GetAttributeValue(s.h, h, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_SENSITIVE, nil),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
	})
	if err != nil {
		return fail(err)
	}
	if !isTrue(attrs[0].Value) || isTrue(attrs[1].Value) {
		return fail(fmt.Errorf("token %q made KEK %q extractable or not sensitive: refusing it", b.cfg.TokenLabel, label))
	}
	same, err := b.find(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}, 2)
	if err != nil {
		return fail(err)
	}
	if len(same) > 1 {
		return fail(fmt.Errorf("%w: pkcs11: another process created %q on token %q at the same time; retry", keys.ErrExists, label, b.cfg.TokenLabel))
	}
	return nil
}
