package pkcs11

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	p11 "github.com/miekg/pkcs11"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/custody-dev/custody/services/signer/internal/keys/keystest"
	"github.com/custody-dev/custody/services/signer/internal/keys/pkcs11/softhsmtest"
)

// requireEnv makes a missing SoftHSM2 a failure instead of a skip.
const requireEnv = "CUSTODY_TEST_REQUIRE_SOFTHSM"

// hsm is the one SoftHSM2 token of this test binary. The module reads
// SOFTHSM2_CONF when it is initialized, and it is shared process-wide, so
// TestMain makes the token and the tests keep apart by key-name prefix.
var hsm struct {
	module, label, pin string
	tokenDir           string // the token's directory, moved away to make it vanish
	missing            string // why SoftHSM2 cannot be used, if it is not installed
	setupErr           error  // installed but could not make the token
}

func TestMain(m *testing.M) {
	cleanup := setUpSoftHSM()
	code := m.Run()
	cleanup()
	os.Exit(code)
}

func setUpSoftHSM() (cleanup func()) {
	tok, err := softhsmtest.New("custody-test")
	switch {
	case errors.Is(err, softhsmtest.ErrMissing):
		hsm.missing = err.Error()
		return func() {}
	case err != nil:
		hsm.setupErr = err
		return func() {}
	}
	hsm.module, hsm.label, hsm.pin, hsm.tokenDir = tok.Module, tok.Label, tok.PIN, tok.TokenDir
	return func() { tok.Close() }
}

// requireHSM skips the test if SoftHSM2 is not installed, unless
// CUSTODY_TEST_REQUIRE_SOFTHSM is set, which makes that a failure.
func requireHSM(t testing.TB) {
	t.Helper()
	if hsm.setupErr != nil {
		t.Fatalf("SoftHSM2 token for the tests: %v", hsm.setupErr)
	}
	if hsm.missing != "" {
		if os.Getenv(requireEnv) != "" {
			t.Fatalf("%s, and %s is set", hsm.missing, requireEnv)
		}
		t.Skip(hsm.missing)
	}
}

func testConfig() Config {
	return Config{ModulePath: hsm.module, TokenLabel: hsm.label, PIN: hsm.pin}
}

// open opens a Backend on the test token, closed when the test ends.
func open(t testing.TB, edit func(*Config)) *Backend {
	t.Helper()
	requireHSM(t)
	cfg := testConfig()
	if edit != nil {
		edit(&cfg)
	}
	b, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// prefix makes key names unique on the shared token, also across -count.
func prefix() string { return "t" + hex.EncodeToString(randomBytes(4)) + "-" }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestConformance(t *testing.T) {
	requireHSM(t)
	keystest.Run(t, keystest.Options{New: func(t *testing.T) keys.Backend { return open(t, nil) }, Prefix: prefix()})
	t.Run("pool of one session", func(t *testing.T) {
		keystest.Run(t, keystest.Options{
			New:        func(t *testing.T) keys.Backend { return open(t, func(c *Config) { c.PoolSize = 1 }) },
			Prefix:     prefix(),
			Algorithms: []string{keys.ECDSAP256},
		})
	})
}

// onSession runs fn on one of b's sessions.
func onSession(t *testing.T, b *Backend, fn func(ctx *p11.Ctx, s *session) error) {
	t.Helper()
	if err := b.with(t.Context(), func(s *session) error { return fn(b.mod.ctx, s) }); err != nil {
		t.Fatal(err)
	}
}

func TestPrivateKeysStayInTheToken(t *testing.T) {
	b := open(t, nil)
	p := prefix()
	for _, alg := range []string{keys.ECDSAP256, keys.Ed25519} {
		name := p + strings.ReplaceAll(alg, "-", "")
		if _, err := b.Create(t.Context(), name, alg); err != nil {
			t.Fatal(err)
		}
		onSession(t, b, func(ctx *p11.Ctx, s *session) error {
			label := versionLabel(name, 1)
			privs, err := b.find(s, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, label), p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY)}, 0)
			if err != nil || len(privs) != 1 {
				t.Fatalf("private keys labelled %s: %v, %v; want one", label, privs, err)
			}
			want := map[uint]bool{
				p11.CKA_TOKEN: true, p11.CKA_PRIVATE: true, p11.CKA_SENSITIVE: true, p11.CKA_ALWAYS_SENSITIVE: true,
				p11.CKA_EXTRACTABLE: false, p11.CKA_NEVER_EXTRACTABLE: true, p11.CKA_SIGN: true,
				p11.CKA_DECRYPT: false, p11.CKA_DERIVE: false, p11.CKA_MODIFIABLE: false,
			}
			for typ, v := range want {
				a, err := ctx.GetAttributeValue(s.h, privs[0], []*p11.Attribute{p11.NewAttribute(typ, nil)})
				if err != nil {
					t.Fatalf("attribute %#x of %s: %v", typ, label, err)
				}
				if isTrue(a[0].Value) != v {
					t.Errorf("%s: attribute %#x = %x, want %v", label, typ, a[0].Value, v)
				}
			}
			// The private value cannot be read out.
			if _, err := ctx.GetAttributeValue(s.h, privs[0], []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)}); !errors.Is(err, p11.Error(p11.CKR_ATTRIBUTE_SENSITIVE)) {
				t.Errorf("reading CKA_VALUE of %s: %v, want CKR_ATTRIBUTE_SENSITIVE", label, err)
			}
			pubs, err := b.find(s, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, []byte(label)), p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY)}, 0)
			if err != nil || len(pubs) != 1 {
				t.Fatalf("public keys with CKA_ID %s: %v, %v; want one", label, pubs, err)
			}
			return nil
		})
	}
}

func TestVersionsSurviveModuleRestart(t *testing.T) {
	requireHSM(t)
	name := prefix() + "restart"
	first, err := Open(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	v1, err := first.Create(t.Context(), name, keys.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := first.Rotate(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	modules.mu.Lock()
	loaded := modules.m[hsm.module] != nil
	modules.mu.Unlock()
	if loaded {
		t.Fatal("the module is still loaded after its last Backend closed")
	}

	b := open(t, nil) // loads and initializes the module again
	vs, err := b.Versions(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]keys.Version{v1, v2}, vs); diff != "" {
		t.Fatalf("Versions after a restart (-before +after):\n%s", diff)
	}
	for _, v := range vs {
		sig, err := b.Sign(t.Context(), name, v.Version, []byte("after restart"))
		if err != nil {
			t.Fatal(err)
		}
		verify(t, v, []byte("after restart"), sig)
	}
}

func verify(t *testing.T, v keys.Version, msg, sig []byte) {
	t.Helper()
	pub, alg, err := attest.ParsePublicKey(v.PublicDER)
	if err != nil {
		t.Fatal(err)
	}
	if err := attest.VerifySignature(attest.Key{ID: v.ID, Algorithm: alg, Public: pub}, msg, sig); err != nil {
		t.Fatalf("%s v%d: %v", v.Name, v.Version, err)
	}
}

// TestRecoversWhenTokenReturns makes the token vanish by moving its
// directory away (SoftHSM2's file store then fails every use of it and
// drops it from the slot list) and brings it back: calls fail with
// ErrUnavailable, never ErrNotFound, and succeed again without a restart.
func TestRecoversWhenTokenReturns(t *testing.T) {
	var logged bytes.Buffer // written by b's calls only, all in this goroutine
	b := open(t, func(c *Config) {
		c.RecoverInterval = 20 * time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	})
	// Never re-initializes the module itself, but shares it with b, so
	// recovers when b does.
	other := open(t, func(c *Config) { c.RecoverInterval = time.Hour })
	name := prefix() + "gone"
	v, err := b.Create(t.Context(), name, keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	for _, be := range []*Backend{b, other} {
		if _, err := be.Sign(t.Context(), name, 1, []byte("before")); err != nil {
			t.Fatal(err)
		}
	}
	// A key other has not signed with yet, so has no handle for.
	if _, err := b.Create(t.Context(), name+"-uncached", keys.Ed25519); err != nil {
		t.Fatal(err)
	}

	// Out of the token directory: a rescan would find it under any name there.
	away := filepath.Join(filepath.Dir(filepath.Dir(hsm.tokenDir)), "token-away")
	if err := os.Rename(hsm.tokenDir, away); err != nil {
		t.Fatal(err)
	}
	back := sync.OnceValue(func() error { return os.Rename(away, hsm.tokenDir) })
	t.Cleanup(func() { back() })

	unavailable := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("%s without the token: %v, want ErrUnavailable", what, err)
		}
		if msg := err.Error(); !strings.Contains(msg, `token "custody-test" not available`) || !strings.Contains(msg, "check the HSM") {
			t.Fatalf("%s without the token: message %q does not say which token is missing and what to check", what, msg)
		}
	}
	// Before any re-initialization the module still lists the token, fails
	// to use it, and finds no objects on it: that is not ErrNotFound.
	_, err = other.Sign(t.Context(), name+"-uncached", 1, []byte("while away"))
	unavailable("sign with a key looked up on a pooled session", err)
	for _, be := range []*Backend{other, b} {
		_, err := be.Versions(t.Context(), name)
		unavailable("versions", err)
		_, err = be.Create(t.Context(), name+"-new", keys.ECDSAP256)
		unavailable("create", err)
		_, err = be.Rotate(t.Context(), name)
		unavailable("rotate", err)
		_, err = be.Sign(t.Context(), name, 1, []byte("while away"))
		unavailable("sign", err)
	}
	// Then b re-initializes the module, several times, and the token is
	// not in the slot list at all.
	for start := time.Now(); time.Since(start) < 200*time.Millisecond; time.Sleep(10 * time.Millisecond) {
		for _, be := range []*Backend{b, other} {
			_, err := be.Sign(t.Context(), name, 1, []byte("while away"))
			unavailable("sign", err)
			_, err = be.Versions(t.Context(), name)
			unavailable("versions", err)
		}
	}
	if epoch := b.mod.epoch.Load(); epoch < 3 {
		t.Fatalf("module epoch %d: want several re-initializations while the token was away", epoch)
	}

	if err := back(); err != nil {
		t.Fatal(err)
	}
	for _, be := range []*Backend{b, other} {
		var sig []byte
		var err error
		for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(10 * time.Millisecond) {
			if sig, err = be.Sign(t.Context(), name, 1, []byte("after")); err == nil {
				break
			}
			if !errors.Is(err, keys.ErrUnavailable) {
				t.Fatalf("sign after the token came back: %v", err)
			}
		}
		if err != nil {
			t.Fatalf("no recovery 10 s after the token came back: %v", err)
		}
		verify(t, v, []byte("after"), sig)
	}
	vs, err := b.Versions(t.Context(), name)
	if err != nil || len(vs) != 1 || vs[0].ID != v.ID {
		t.Fatalf("Versions after recovery = %v, %v; want v1 %s", vs, err, v.ID)
	}
	if _, err := b.Versions(t.Context(), name+"-new"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("a Create that failed without the token left a key: %v", err)
	}
	log := logged.String()
	for _, want := range []string{"pkcs11 token not usable", "pkcs11 module re-initialized", "pkcs11 token usable again"} {
		if strings.Count(log, want) < 1 {
			t.Errorf("log does not say %q:\n%s", want, log)
		}
	}
	if n := strings.Count(log, "pkcs11 token not usable"); n != 1 {
		t.Errorf("token loss logged %d times, want once per outage:\n%s", n, log)
	}
	if strings.Contains(log, hsm.pin) {
		t.Error("the log shows the PIN")
	}
}

func TestOpenFailures(t *testing.T) {
	requireHSM(t)
	tests := []struct {
		name     string
		edit     func(*Config)
		sentinel error
		say      []string
	}{
		{"wrong PIN", func(c *Config) { c.PIN = "not-the-pin" }, keys.ErrUnavailable, []string{`token "custody-test" refused the PIN`, "CKR_PIN_INCORRECT", "check the PIN file"}},
		{"unknown token", func(c *Config) { c.TokenLabel = "no-such-token" }, keys.ErrUnavailable, []string{`token "no-such-token" not available`, "check the HSM and the token label/PIN"}},
		{"missing module", func(c *Config) { c.ModulePath = "/nonexistent/libpkcs11.so" }, keys.ErrUnavailable, []string{"cannot load module /nonexistent/libpkcs11.so"}},
		{"bad config", func(c *Config) { *c = Config{ModulePath: "relative.so", PoolSize: -1} }, keys.ErrInvalid,
			[]string{`module path "relative.so" must be absolute`, "token label must be 1 to 32 bytes", "a PIN is required", "pool size -1 is negative"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.edit(&cfg)
			b, err := Open(cfg)
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tt.sentinel) {
				t.Errorf("Open: %v, want %v", err, tt.sentinel)
			}
			for _, s := range tt.say {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Open: %q does not say %q", err, s)
				}
			}
			if (cfg.PIN != "" && strings.Contains(err.Error(), cfg.PIN)) || strings.Contains(err.Error(), hsm.pin) {
				t.Errorf("Open: the error shows a PIN: %q", err)
			}
		})
	}
	// The failures left nothing loaded and the right configuration works.
	modules.mu.Lock()
	n := len(modules.m)
	modules.mu.Unlock()
	if n != 0 {
		t.Errorf("%d modules still loaded after failed Opens", n)
	}
	open(t, nil)
}

func TestClosedAndCanceled(t *testing.T) {
	b := open(t, nil)
	name := prefix() + "closed"
	if _, err := b.Create(t.Context(), name, keys.Ed25519); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := b.Sign(ctx, name, 1, []byte("m")); !errors.Is(err, context.Canceled) {
		t.Errorf("Sign with a canceled context: %v, want context.Canceled", err)
	}
	if err := errors.Join(b.Close(), b.Close()); err != nil {
		t.Fatalf("Close twice: %v", err)
	}
	if _, err := b.Sign(t.Context(), name, 1, []byte("m")); !errors.Is(err, keys.ErrUnavailable) {
		t.Errorf("Sign after Close: %v, want ErrUnavailable", err)
	}
}

func TestConfigHidesPIN(t *testing.T) {
	cfg := Config{ModulePath: "/m.so", TokenLabel: "t", PIN: "s3cret-pin-value", PoolSize: 3}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "pkcs11", cfg)
	for _, out := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), logged.String()} {
		if strings.Contains(out, cfg.PIN) {
			t.Errorf("PIN printed: %s", out)
		}
		if !strings.Contains(out, "/m.so") {
			t.Errorf("module path missing: %s", out)
		}
	}
}

func TestReadPIN(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ content, want string }{{"1234\n", "1234"}, {"1234\r\n", "1234"}, {"12 34", "12 34"}, {"\n", ""}} {
		path := filepath.Join(dir, "pin")
		if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadPIN(path)
		if tt.want == "" {
			if err == nil {
				t.Errorf("ReadPIN(%q) = %q, want an error", tt.content, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ReadPIN(%q) = %q, %v; want %q", tt.content, got, err, tt.want)
		}
	}
}

func TestEncodeSignature(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("m"))
	der, err := ecdsa.SignASN1(rand.Reader, priv, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ecdsaRaw(der)
	if err != nil {
		t.Fatal(err)
	}
	got, err := encodeSignature(keys.ECDSAP256, raw)
	if err != nil || !ecdsa.VerifyASN1(&priv.PublicKey, sum[:], got) {
		t.Fatalf("encodeSignature(r‖s) = %x, %v; does not verify", got, err)
	}
	for _, bad := range [][]byte{nil, make([]byte, 63), make([]byte, 64), make([]byte, 65)} {
		if _, err := encodeSignature(keys.ECDSAP256, bad); err == nil {
			t.Errorf("encodeSignature(%d bytes, zero) accepted", len(bad))
		}
	}
	if _, err := encodeSignature(keys.Ed25519, make([]byte, 63)); err == nil {
		t.Error("a 63-byte Ed25519 signature accepted")
	}
}

// ecdsaRaw turns an ASN.1 ECDSA P-256 signature into r‖s, as a token
// returns it.
func ecdsaRaw(der []byte) ([]byte, error) {
	var r, s big.Int
	in, seq := cryptobyte.String(der), cryptobyte.String(nil)
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() || !seq.ReadASN1Integer(&r) || !seq.ReadASN1Integer(&s) || !seq.Empty() {
		return nil, errors.New("bad DER signature")
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out, nil
}

func TestPublicKey(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	point, _ := priv.PublicKey.Bytes()
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	wrap := func(b []byte) []byte { return append([]byte{0x04, byte(len(b))}, b...) }
	// Bare values that also read as an OCTET STRING: a P-256 point whose X
	// starts with 63 (the remaining length), about one key in 256, and an
	// Ed25519 key starting 0x04 30.
	var ambiguous []byte
	for ambiguous == nil {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if p, _ := k.PublicKey.Bytes(); p[1] == 63 {
			ambiguous = p
		}
	}
	edAmbiguous := append([]byte{0x04, 30}, edPub[2:]...)
	tests := []struct {
		name, alg string
		point     []byte
		ok        bool
	}{
		{"P-256 in an OCTET STRING", keys.ECDSAP256, wrap(point), true},
		{"bare P-256 point", keys.ECDSAP256, point, true},
		{"bare P-256 point that reads as an OCTET STRING", keys.ECDSAP256, ambiguous, true},
		{"wrapped P-256 point that reads as an OCTET STRING", keys.ECDSAP256, wrap(ambiguous), true},
		{"bare Ed25519 that reads as an OCTET STRING", keys.Ed25519, edAmbiguous, true},
		{"P-256 point off the curve", keys.ECDSAP256, wrap(append([]byte{4}, make([]byte, 64)...)), false},
		{"P-256 with trailing bytes", keys.ECDSAP256, append(wrap(point), 0), false},
		{"Ed25519 in an OCTET STRING", keys.Ed25519, wrap(edPub), true},
		{"bare Ed25519", keys.Ed25519, edPub, true},
		{"short Ed25519", keys.Ed25519, wrap(edPub[:31]), false},
		{"empty", keys.Ed25519, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, err := publicKey(tt.alg, tt.point)
			if (err == nil) != tt.ok {
				t.Fatalf("publicKey = %v, %v; want ok=%v", pub, err, tt.ok)
			}
		})
	}
}

func FuzzPublicKey(f *testing.F) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	point, _ := priv.PublicKey.Bytes()
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	f.Add(true, append([]byte{0x04, 65}, point...))
	f.Add(false, append([]byte{0x04, 32}, edPub...))
	f.Fuzz(func(t *testing.T, ec bool, b []byte) {
		alg := keys.Ed25519
		if ec {
			alg = keys.ECDSAP256
		}
		pub, err := publicKey(alg, b)
		if err != nil {
			return
		}
		if _, err := attest.KeyID(pub); err != nil {
			t.Fatalf("publicKey accepted %x but it does not marshal: %v", b, err)
		}
	})
}

func TestAlgorithm(t *testing.T) {
	ulong := func(v uint) []byte { return p11.NewAttribute(0, v).Value }
	tests := []struct {
		keyType, params []byte
		want            string
	}{
		{ulong(p11.CKK_EC), oidP256, keys.ECDSAP256},
		{ulong(ckkECEdwards), oidEd25519, keys.Ed25519},
		{ulong(ckkECEdwards), nameEd25519, keys.Ed25519},
		{ulong(p11.CKK_EC), oidEd25519, ""},
		{ulong(p11.CKK_RSA), nil, ""},
		{[]byte{1}, oidP256, ""},
	}
	for _, tt := range tests {
		got, err := algorithm(tt.keyType, tt.params)
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("algorithm(%x, %x) = %q, %v; want %q", tt.keyType, tt.params, got, err, tt.want)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for s, want := range map[string]int{"1": 1, "12": 12, "0": 0, "01": 0, "": 0, "-1": 0, "+1": 0, "1x": 0, "1234567890": 0} {
		got, ok := parseVersion(s)
		if ok != (want > 0) || got != want {
			t.Errorf("parseVersion(%q) = %d, %v; want %d", s, got, ok, want)
		}
	}
}

// BenchmarkRawSign is the token's own rate: ECDSA P-256 signatures straight
// through the module, one session per goroutine, no Backend.
func BenchmarkRawSign(b *testing.B) {
	be := open(b, nil)
	name := prefix() + "bench"
	if _, err := be.Create(context.Background(), name, keys.ECDSAP256); err != nil {
		b.Fatal(err)
	}
	var key keyRef
	var slot uint
	err := be.with(context.Background(), func(s *session) error {
		var err error
		key, err = be.privateKey(s, versionLabel(name, 1))
		slot = s.slot
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("benchmark message"))
	ctx := be.mod.ctx
	for _, p := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("parallelism=%d", p), func(b *testing.B) {
			b.SetParallelism(p)
			b.RunParallel(func(pb *testing.PB) {
				// The Backend's login covers every session of the process.
				sh, err := ctx.OpenSession(slot, sessionFlags)
				if err != nil {
					b.Error(err)
					return
				}
				defer ctx.CloseSession(sh)
				for pb.Next() {
					if err := ctx.SignInit(sh, mechECDSA, key.h); err != nil {
						b.Error(err)
						return
					}
					if _, err := ctx.Sign(sh, digest[:]); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkBackendSign is the same through Backend.Sign: hashing, pool,
// handle cache and DER encoding included.
func BenchmarkBackendSign(b *testing.B) {
	be := open(b, nil)
	name := prefix() + "bench"
	if _, err := be.Create(context.Background(), name, keys.ECDSAP256); err != nil {
		b.Fatal(err)
	}
	msg := []byte("benchmark message")
	for _, p := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("parallelism=%d", p), func(b *testing.B) {
			b.SetParallelism(p)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := be.Sign(context.Background(), name, 1, msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
