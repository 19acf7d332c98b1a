// Package pkcs11 keeps the signer's keys in an HSM token, through PKCS#11.
package pkcs11

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	p11 "github.com/miekg/pkcs11"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/services/signer/internal/keys"
)

// PKCS#11 3.0 numbers for Ed25519, which the 2.40 headers of miekg/pkcs11
// lack. SoftHSM2 2.6 implements them.
const (
	ckkECEdwards           = 0x40
	ckmECEdwardsKeyPairGen = 0x1055
	ckmEdDSA               = 0x1057
)

var (
	// DER object identifiers for CKA_EC_PARAMS.
	oidP256    = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	oidEd25519 = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}
	// Some tokens name the curve instead: PrintableString "edwards25519".
	nameEd25519 = append([]byte{0x13, 0x0c}, "edwards25519"...)

	mechECDSA = []*p11.Mechanism{p11.NewMechanism(p11.CKM_ECDSA, nil)}
	mechEdDSA = []*p11.Mechanism{p11.NewMechanism(ckmEdDSA, nil)}
)

const (
	defaultRecoverInterval = 5 * time.Second
	sessionFlags           = p11.CKF_SERIAL_SESSION | p11.CKF_RW_SESSION
)

// Config says which token to use.
type Config struct {
	// ModulePath is the absolute path of the PKCS#11 library, e.g.
	// /usr/lib/softhsm/libsofthsm2.so.
	ModulePath string
	// TokenLabel picks the token; exactly one present token must carry it.
	TokenLabel string
	// PIN is the user PIN. Callers read it from a file (ReadPIN); it is
	// never logged or put in an error.
	PIN string
	// PoolSize caps the sessions open at once, hence concurrent signatures;
	// 0 means 2×GOMAXPROCS.
	PoolSize int
	// RecoverInterval is the least time between two re-initializations of
	// the module while the token is missing; 0 means 5 s.
	RecoverInterval time.Duration
	// Logger receives token loss and recovery events; nil discards them.
	Logger *slog.Logger
}

// Validate returns every problem with c at once, wrapping keys.ErrInvalid.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.ModulePath == "":
		errs = append(errs, errors.New("module path is required"))
	case !filepath.IsAbs(c.ModulePath):
		errs = append(errs, fmt.Errorf("module path %q must be absolute", c.ModulePath))
	}
	if c.TokenLabel == "" || len(c.TokenLabel) > 32 {
		errs = append(errs, fmt.Errorf("token label must be 1 to 32 bytes, got %d", len(c.TokenLabel)))
	}
	if c.PIN == "" {
		errs = append(errs, errors.New("a PIN is required"))
	}
	if c.PoolSize < 0 {
		errs = append(errs, fmt.Errorf("pool size %d is negative", c.PoolSize))
	}
	if c.RecoverInterval < 0 {
		errs = append(errs, fmt.Errorf("recover interval %v is negative", c.RecoverInterval))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: pkcs11 config: %w", keys.ErrInvalid, errors.Join(errs...))
	}
	return nil
}

// String describes c without its PIN.
func (c Config) String() string {
	return fmt.Sprintf("pkcs11.Config{ModulePath: %q, TokenLabel: %q, PIN: <redacted>, PoolSize: %d, RecoverInterval: %v}",
		c.ModulePath, c.TokenLabel, c.PoolSize, c.RecoverInterval)
}

// GoString is String, so that %#v does not print the PIN either.
func (c Config) GoString() string { return c.String() }

// LogValue logs c without its PIN.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("module", c.ModulePath), slog.String("token", c.TokenLabel), slog.Int("pool_size", c.PoolSize))
}

// ReadPIN reads a PIN file, trimming one trailing newline.
func ReadPIN(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read pkcs11 PIN file: %w", err)
	}
	pin := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if pin == "" {
		return "", fmt.Errorf("pkcs11 PIN file %s is empty", path)
	}
	return pin, nil
}

// Backend is a keys.Backend on one PKCS#11 token. Each key version is a
// token key pair labelled "<name>/v<N>" (CKA_LABEL and CKA_ID); the private
// half is sensitive and not extractable. It is safe for concurrent use:
// signatures run in parallel on a pool of logged-in sessions.
//
// When the token goes away every call fails with keys.ErrUnavailable; the
// Backend drops its sessions, looks for the token again on later calls and,
// at most once per RecoverInterval, re-initializes the module (which makes
// modules like SoftHSM2 rescan their tokens), so it recovers without a
// restart. Create and Rotate are serialized within a Backend, not across
// processes sharing a token.
type Backend struct {
	cfg Config
	mod *module
	log *slog.Logger

	sem  chan struct{} // one slot per session in use
	idle chan *session
	done chan struct{} // closed by Close

	gen      atomic.Uint64 // bumped when sessions and handles must be looked up again
	degraded atomic.Bool

	mu     sync.Mutex // guards tok, pinErr and logins
	tok    tokenState
	pinErr error // once the token rejects the PIN, it is not tried again

	handles sync.Map // label → keyRef

	adminMu   sync.Mutex // serializes Create and Rotate
	closeOnce sync.Once
}

var _ keys.Backend = (*Backend)(nil)

type tokenState struct {
	slot       uint
	epoch, gen uint64
	found      bool
}

type session struct {
	h          p11.SessionHandle
	slot       uint
	epoch, gen uint64 // module epoch and Backend generation it belongs to
}

type keyRef struct {
	h          p11.ObjectHandle
	alg        string
	epoch, gen uint64
}

// Open loads the module (shared with other Backends on the same path),
// finds the token and logs in, so that a wrong label or PIN fails now
// rather than at the first signature. A token that is not there fails with
// keys.ErrUnavailable. PKCS#11 logs in once per process and token: while
// another Backend of this process is logged in to the token, the module
// does not check cfg.PIN again.
func Open(cfg Config) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = 2 * runtime.GOMAXPROCS(0)
	}
	if cfg.RecoverInterval == 0 {
		cfg.RecoverInterval = defaultRecoverInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mod, err := openModule(cfg.ModulePath)
	if err != nil {
		return nil, err
	}
	b := &Backend{
		cfg:  cfg,
		mod:  mod,
		log:  log.With(slog.String("backend", "pkcs11"), slog.String("token", cfg.TokenLabel)),
		sem:  make(chan struct{}, cfg.PoolSize),
		idle: make(chan *session, cfg.PoolSize),
		done: make(chan struct{}),
	}
	if err := b.with(context.Background(), func(*session) error { return nil }); err != nil {
		b.Close()
		return nil, b.wrap(err, "open")
	}
	return b, nil
}

// Kind returns "pkcs11".
func (b *Backend) Kind() string { return "pkcs11" }

// Close closes the Backend's sessions after the calls in flight and
// releases the module (finalized when its last Backend closes). Later calls
// fail with keys.ErrUnavailable. Close is idempotent.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		close(b.done)
		for range cap(b.sem) {
			b.sem <- struct{}{}
		}
		b.mod.mu.RLock()
		epoch := b.mod.epoch.Load()
		for drained := false; !drained; {
			select {
			case s := <-b.idle:
				b.discard(s, epoch)
			default:
				drained = true
			}
		}
		b.mod.mu.RUnlock()
		b.mod.release()
	})
	return nil
}

// Create makes key name with version 1.
func (b *Backend) Create(ctx context.Context, name, algorithm string) (keys.Version, error) {
	if !keys.ValidName(name) {
		return keys.Version{}, fmt.Errorf("%w: pkcs11: key name %q", keys.ErrInvalid, name)
	}
	if algorithm != keys.ECDSAP256 && algorithm != keys.Ed25519 {
		return keys.Version{}, fmt.Errorf("%w: pkcs11: algorithm %q: want %s or %s", keys.ErrInvalid, algorithm, keys.ECDSAP256, keys.Ed25519)
	}
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	var v keys.Version
	err := b.with(ctx, func(s *session) error {
		vs, err := b.list(s, name)
		if err != nil {
			return err
		}
		if len(vs) > 0 {
			return fmt.Errorf("%w: pkcs11: key %q is already on token %q", keys.ErrExists, name, b.cfg.TokenLabel)
		}
		v, err = b.generate(s, name, 1, algorithm)
		return err
	})
	if err != nil {
		return keys.Version{}, b.wrap(err, "create key %q", name)
	}
	return v, nil
}

// Rotate adds version N+1 to key name, with the algorithm of version N.
func (b *Backend) Rotate(ctx context.Context, name string) (keys.Version, error) {
	if !keys.ValidName(name) {
		return keys.Version{}, fmt.Errorf("%w: pkcs11: key name %q", keys.ErrInvalid, name)
	}
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	var v keys.Version
	err := b.with(ctx, func(s *session) error {
		vs, err := b.list(s, name)
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			return fmt.Errorf("%w: pkcs11: key %q is not on token %q", keys.ErrNotFound, name, b.cfg.TokenLabel)
		}
		last := vs[len(vs)-1]
		v, err = b.generate(s, name, last.Version+1, last.Algorithm)
		return err
	})
	if err != nil {
		return keys.Version{}, b.wrap(err, "rotate key %q", name)
	}
	return v, nil
}

// Versions lists the versions of key name on the token, oldest first. It
// reads every public key label on the token, so its cost grows with the
// number of objects there.
func (b *Backend) Versions(ctx context.Context, name string) ([]keys.Version, error) {
	if !keys.ValidName(name) {
		return nil, fmt.Errorf("%w: pkcs11: key name %q", keys.ErrInvalid, name)
	}
	var vs []keys.Version
	err := b.with(ctx, func(s *session) error {
		var err error
		vs, err = b.list(s, name)
		if err == nil && len(vs) == 0 {
			err = fmt.Errorf("%w: pkcs11: key %q is not on token %q", keys.ErrNotFound, name, b.cfg.TokenLabel)
		}
		return err
	})
	if err != nil {
		return nil, b.wrap(err, "list versions of key %q", name)
	}
	return vs, nil
}

// Sign signs message with version of key name: ECDSA P-256 keys sign
// SHA-256(message) (hashed here, ASN.1 DER signature), Ed25519 keys sign
// message itself. Private key handles are cached per version.
func (b *Backend) Sign(ctx context.Context, name string, version int, message []byte) ([]byte, error) {
	if !keys.ValidName(name) {
		return nil, fmt.Errorf("%w: pkcs11: key name %q", keys.ErrInvalid, name)
	}
	if version < 1 {
		return nil, fmt.Errorf("%w: pkcs11: key %q has no version %d", keys.ErrNotFound, name, version)
	}
	label := versionLabel(name, version)
	var sig []byte
	err := b.with(ctx, func(s *session) error {
		k, err := b.privateKey(s, label)
		if err != nil {
			return err
		}
		mech, data := mechEdDSA, message
		if k.alg == keys.ECDSAP256 {
			sum := sha256.Sum256(message)
			mech, data = mechECDSA, sum[:]
		}
		if err := b.mod.ctx.SignInit(s.h, mech, k.h); err != nil {
			return err
		}
		raw, err := b.mod.ctx.Sign(s.h, data)
		if err != nil {
			return err
		}
		sig, err = encodeSignature(k.alg, raw)
		return err
	})
	if err != nil {
		return nil, b.wrap(err, "sign with key %q version %d", name, version)
	}
	return sig, nil
}

func versionLabel(name string, version int) string { return name + "/v" + strconv.Itoa(version) }

// parseVersion parses the N of a "/vN" label suffix: decimal, no sign or
// leading zero.
func parseVersion(s string) (int, bool) {
	if s == "" || len(s) > 9 || s[0] == '0' {
		return 0, false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// list returns the versions of name on the token, oldest first; none is
// not an error here, but a token that has gone is.
func (b *Backend) list(s *session, name string) ([]keys.Version, error) {
	ctx := b.mod.ctx
	hs, err := b.find(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_TOKEN, true),
	}, 0)
	if err != nil {
		return nil, err
	}
	prefix := name + "/v"
	var vs []keys.Version
	for _, h := range hs {
		attrs, err := ctx.GetAttributeValue(s.h, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, nil)})
		if err != nil {
			return nil, err
		}
		label := string(attrs[0].Value)
		n, ok := parseVersion(strings.TrimPrefix(label, prefix))
		if !ok || !strings.HasPrefix(label, prefix) {
			continue
		}
		v, err := b.readPublic(s, h, name, n)
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		// An empty search is also what a token that has vanished returns.
		return nil, b.checkToken(s)
	}
	slices.SortFunc(vs, func(x, y keys.Version) int { return x.Version - y.Version })
	for i := 1; i < len(vs); i++ {
		if vs[i].Version == vs[i-1].Version {
			return nil, fmt.Errorf("token %q has two public keys labelled %q: remove the one that is not in use", b.cfg.TokenLabel, versionLabel(name, vs[i].Version))
		}
	}
	return vs, nil
}

// find returns the objects matching tmpl, at most max (0: all).
func (b *Backend) find(s *session, tmpl []*p11.Attribute, max int) ([]p11.ObjectHandle, error) {
	ctx := b.mod.ctx
	if err := ctx.FindObjectsInit(s.h, tmpl); err != nil {
		return nil, err
	}
	var all []p11.ObjectHandle
	for max == 0 || len(all) < max {
		hs, _, err := ctx.FindObjects(s.h, 64)
		if err != nil {
			_ = ctx.FindObjectsFinal(s.h)
			return nil, err
		}
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	if err := ctx.FindObjectsFinal(s.h); err != nil {
		return nil, err
	}
	return all, nil
}

// readPublic reads public key object h back as version n of name.
func (b *Backend) readPublic(s *session, h p11.ObjectHandle, name string, n int) (keys.Version, error) {
	attrs, err := b.mod.ctx.GetAttributeValue(s.h, h, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_KEY_TYPE, nil),
		p11.NewAttribute(p11.CKA_EC_PARAMS, nil),
		p11.NewAttribute(p11.CKA_EC_POINT, nil),
	})
	if err != nil {
		return keys.Version{}, err
	}
	alg, err := algorithm(attrs[0].Value, attrs[1].Value)
	if err != nil {
		return keys.Version{}, fmt.Errorf("public key %q: %w", versionLabel(name, n), err)
	}
	pub, err := publicKey(alg, attrs[2].Value)
	if err != nil {
		return keys.Version{}, fmt.Errorf("public key %q: %w", versionLabel(name, n), err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return keys.Version{}, err
	}
	id, err := attest.KeyID(pub)
	if err != nil {
		return keys.Version{}, err
	}
	return keys.Version{Name: name, Version: n, ID: id, Algorithm: alg, PublicDER: der}, nil
}

// algorithm names the key from CKA_KEY_TYPE and CKA_EC_PARAMS.
func algorithm(keyType, params []byte) (string, error) {
	var kt uint64
	switch len(keyType) { // a native-endian CK_ULONG
	case 8:
		kt = binary.NativeEndian.Uint64(keyType)
	case 4:
		kt = uint64(binary.NativeEndian.Uint32(keyType))
	default:
		return "", fmt.Errorf("CKA_KEY_TYPE has %d bytes", len(keyType))
	}
	switch {
	case kt == p11.CKK_EC && slices.Equal(params, oidP256):
		return keys.ECDSAP256, nil
	case kt == ckkECEdwards && (slices.Equal(params, oidEd25519) || slices.Equal(params, nameEd25519)):
		return keys.Ed25519, nil
	default:
		return "", fmt.Errorf("key type %#x with parameters %x is neither ECDSA P-256 nor Ed25519", kt, params)
	}
}

// publicKey parses CKA_EC_POINT: a DER OCTET STRING around the point, or
// (some tokens) the bare point.
// bareSize is the size of an unwrapped CKA_EC_POINT by algorithm: an
// uncompressed P-256 point (0x04 ‖ X ‖ Y) and an Ed25519 public key.
var bareSize = map[string]int{keys.ECDSAP256: 65, keys.Ed25519: ed25519.PublicKeySize}

func publicKey(alg string, point []byte) (any, error) {
	// Tokens return CKA_EC_POINT DER-wrapped in an OCTET STRING or bare.
	// A value of the bare size is taken as bare: a bare point may itself
	// read as an OCTET STRING (0x04, then a first coordinate byte that
	// happens to equal the remaining length), which unwrapping would cut.
	raw := point
	if len(point) != bareSize[alg] {
		in := cryptobyte.String(point)
		var inner cryptobyte.String
		if in.ReadASN1(&inner, cbasn1.OCTET_STRING) && in.Empty() {
			raw = inner
		}
	}
	switch alg {
	case keys.ECDSAP256:
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
		if err != nil {
			return nil, fmt.Errorf("CKA_EC_POINT is not a P-256 point: %w", err)
		}
		return pub, nil
	case keys.Ed25519:
		if len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("CKA_EC_POINT of an Ed25519 key has %d bytes, want %d", len(raw), ed25519.PublicKeySize)
		}
		return ed25519.PublicKey(slices.Clone([]byte(raw))), nil
	}
	return nil, fmt.Errorf("algorithm %q", alg)
}

// encodeSignature turns a token signature into the wire form: ASN.1 DER
// for ECDSA (the token returns r‖s), the 64 bytes as is for Ed25519.
func encodeSignature(alg string, raw []byte) ([]byte, error) {
	if len(raw) != 64 {
		return nil, fmt.Errorf("token returned a %d-byte %s signature, want 64", len(raw), alg)
	}
	if alg == keys.Ed25519 {
		return raw, nil
	}
	r, s := new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])
	if r.Sign() == 0 || s.Sign() == 0 {
		return nil, errors.New("token returned an ECDSA signature with a zero component")
	}
	var cb cryptobyte.Builder
	cb.AddASN1(cbasn1.SEQUENCE, func(cb *cryptobyte.Builder) {
		cb.AddASN1BigInt(r)
		cb.AddASN1BigInt(s)
	})
	return cb.Bytes()
}

// privateKey finds the private key labelled label, from the cache when the
// cached handle belongs to s's module epoch and Backend generation.
func (b *Backend) privateKey(s *session, label string) (keyRef, error) {
	if v, ok := b.handles.Load(label); ok {
		if k := v.(keyRef); k.epoch == s.epoch && k.gen == s.gen {
			return k, nil
		}
	}
	hs, err := b.find(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
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
		return keyRef{}, fmt.Errorf("%w: pkcs11: no private key labelled %q on token %q", keys.ErrNotFound, label, b.cfg.TokenLabel)
	case 1:
	default:
		return keyRef{}, fmt.Errorf("token %q has two private keys labelled %q: remove the one that is not in use", b.cfg.TokenLabel, label)
	}
	attrs, err := b.mod.ctx.GetAttributeValue(s.h, hs[0], []*p11.Attribute{
		p11.NewAttribute(p11.CKA_KEY_TYPE, nil),
		p11.NewAttribute(p11.CKA_EC_PARAMS, nil),
	})
	if err != nil {
		return keyRef{}, err
	}
	alg, err := algorithm(attrs[0].Value, attrs[1].Value)
	if err != nil {
		return keyRef{}, fmt.Errorf("private key %q: %w", label, err)
	}
	k := keyRef{h: hs[0], alg: alg, epoch: s.epoch, gen: s.gen}
	b.handles.Store(label, k)
	return k, nil
}

// noRetry marks a failure after which the operation must not run again
// (a key pair may already exist).
type noRetry struct{ error }

func (e noRetry) Unwrap() error { return e.error }

// generate makes version n of name on the token and reads it back.
func (b *Backend) generate(s *session, name string, n int, alg string) (keys.Version, error) {
	ctx := b.mod.ctx
	label := versionLabel(name, n)
	mech, keyType, params := uint(p11.CKM_EC_KEY_PAIR_GEN), uint(p11.CKK_EC), oidP256
	if alg == keys.Ed25519 {
		mech, keyType, params = ckmECEdwardsKeyPairGen, ckkECEdwards, oidEd25519
	}
	common := func(class uint) []*p11.Attribute {
		return []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, class),
			p11.NewAttribute(p11.CKA_KEY_TYPE, keyType),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_LABEL, label),
			p11.NewAttribute(p11.CKA_ID, []byte(label)),
			// Labels name versions: nobody relabels a key into another version.
			p11.NewAttribute(p11.CKA_MODIFIABLE, false),
		}
	}
	pubTmpl := append(common(p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_PRIVATE, false),
		p11.NewAttribute(p11.CKA_VERIFY, true),
		p11.NewAttribute(p11.CKA_EC_PARAMS, params),
	)
	privTmpl := append(common(p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
	)
	pubH, privH, err := ctx.GenerateKeyPair(s.h, []*p11.Mechanism{p11.NewMechanism(mech, nil)}, pubTmpl, privTmpl)
	if err != nil {
		return keys.Version{}, err
	}
	v, err := b.checkGenerated(s, pubH, privH, name, n, alg)
	if err != nil {
		_ = ctx.DestroyObject(s.h, privH)
		_ = ctx.DestroyObject(s.h, pubH)
		return keys.Version{}, noRetry{err}
	}
	return v, nil
}

// checkGenerated reads a new key pair back, checks that the token honoured
// the private key's protection, and that no other process created the same
// version meanwhile.
func (b *Backend) checkGenerated(s *session, pubH, privH p11.ObjectHandle, name string, n int, alg string) (keys.Version, error) {
	label := versionLabel(name, n)
	attrs, err := b.mod.ctx.GetAttributeValue(s.h, privH, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_SENSITIVE, nil),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
	})
	if err != nil {
		return keys.Version{}, err
	}
	if !isTrue(attrs[0].Value) || isTrue(attrs[1].Value) {
		return keys.Version{}, fmt.Errorf("token %q made private key %q extractable or not sensitive: refusing it", b.cfg.TokenLabel, label)
	}
	v, err := b.readPublic(s, pubH, name, n)
	if err != nil {
		return keys.Version{}, err
	}
	if v.Algorithm != alg {
		return keys.Version{}, fmt.Errorf("token %q generated a %s key for %q, want %s", b.cfg.TokenLabel, v.Algorithm, label, alg)
	}
	same, err := b.find(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}, 2)
	if err != nil {
		return keys.Version{}, err
	}
	if len(same) > 1 {
		return keys.Version{}, fmt.Errorf("%w: pkcs11: another process created %q on token %q at the same time; list the versions and retry", keys.ErrExists, label, b.cfg.TokenLabel)
	}
	return v, nil
}

func isTrue(v []byte) bool { return len(v) == 1 && v[0] != 0 }
