package policy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/util"

	defaultpolicy "github.com/custody-dev/custody/services/gatekeeper/policy"
)

const (
	goodManifest = `{"revision": "2026-12-03.1", "roots": ["custody/admission"]}`
	goodRego     = `package custody.admission

deny contains msg if {
	not input.environment in data.custody.admission.config.environments
	msg := sprintf("environment %q is not in this bundle's list", [input.environment])
}
`
	goodData = `{"environments": ["staging"]}`
)

func goodFiles() map[string]string {
	return map[string]string{".manifest": goodManifest, "admission.rego": goodRego, "custody/admission/config/data.json": goodData}
}

// shellDirHash is what docs/policy.md tells an operator to run: find . -type
// f | cut -c3- | LC_ALL=C sort | xargs -r sha256sum | sha256sum.
func shellDirHash(files map[string]string) string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	var lines strings.Builder
	for _, n := range names {
		sum := sha256.Sum256([]byte(files[n]))
		fmt.Fprintf(&lines, "%x  %s\n", sum, n)
	}
	sum := sha256.Sum256([]byte(lines.String()))
	return "dirHash:" + hex.EncodeToString(sum[:])
}

func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for n, c := range files {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type tarEntry struct {
	name string
	typ  byte
	body string
}

func tarGz(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o644, Size: int64(len(e.body))}
		if typ != tar.TypeReg {
			h.Size = 0
			h.Linkname = "/etc/passwd"
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tarball writes files as `opa build` lays them out: "/name" members.
func tarball(t *testing.T, files map[string]string) string {
	t.Helper()
	var entries []tarEntry
	for n, c := range files {
		entries = append(entries, tarEntry{name: "/" + n, body: c})
	}
	p := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(p, tarGz(t, entries), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// signingKey is an ES256 key pair in PEM.
func signingKey(t *testing.T) (private, public []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
}

// sign adds .signatures.json to files as `opa sign` does: a JWT over the
// SHA-256 of every file (structured documents hashed in OPA's canonical
// form).
func sign(t *testing.T, files map[string]string, private []byte) map[string]string {
	t.Helper()
	h, err := bundle.NewSignatureHasher(bundle.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	var infos []bundle.FileInfo
	for n, c := range files {
		var v any = []byte(c)
		if bundle.IsStructuredDoc(n) {
			var doc any
			if err := util.Unmarshal([]byte(c), &doc); err != nil {
				t.Fatal(err)
			}
			v = doc
		}
		sum, err := h.HashFile(v)
		if err != nil {
			t.Fatal(err)
		}
		infos = append(infos, bundle.NewFile(n, hex.EncodeToString(sum), "SHA-256"))
	}
	token, err := bundle.GenerateSignedToken(infos, bundle.NewSigningConfig(string(private), "ES256", ""), DefaultKeyID)
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := json.Marshal(bundle.SignaturesConfig{Signatures: []string{token}})
	out := map[string]string{".signatures.json": string(sig)}
	for n, c := range files {
		out[n] = c
	}
	return out
}

// TestLoadBundle: a directory and a tarball of the same files load as the
// same policy, with the manifest's revision and the digest an operator
// computes with sha256sum; the bundle's data is what the policy reads.
func TestLoadBundle(t *testing.T) {
	files := goodFiles()
	for _, p := range []string{writeDir(t, files), tarball(t, files)} {
		pol, err := LoadBundle(t.Context(), p, BundleOptions{})
		if err != nil {
			t.Fatalf("LoadBundle(%s): %v", p, err)
		}
		if pol.Revision() != "2026-12-03.1" || pol.Digest() != shellDirHash(files) || pol.Name() != p {
			t.Errorf("%s: revision %q digest %s name %s; want 2026-12-03.1, %s", p, pol.Revision(), pol.Digest(), pol.Name(), shellDirHash(files))
		}
		in := good()
		if deny, err := pol.Evaluate(t.Context(), in); err != nil || len(deny) != 0 {
			t.Errorf("staging: %v, %v; want admitted", deny, err)
		}
		in.Environment = "prod"
		if deny, err := pol.Evaluate(t.Context(), in); err != nil || len(deny) != 1 || !strings.Contains(deny[0], `"prod" is not in this bundle's list`) {
			t.Errorf("prod: %v, %v; want the data-driven denial", deny, err)
		}
	}
	// One byte more in any file is another digest.
	other := goodFiles()
	other["custody/admission/config/data.json"] = `{"environments": ["staging", "prod"]}`
	pol, err := LoadBundle(t.Context(), writeDir(t, other), BundleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pol.Digest() == shellDirHash(files) {
		t.Error("changed data, same digest")
	}
}

// TestDefaultBundle: the embedded default is a bundle too: revision
// builtin, its digest the dirHash of the directory's .manifest and
// admission.rego.
func TestDefaultBundle(t *testing.T) {
	pol, err := LoadBundleFS(t.Context(), defaultpolicy.BundleName, defaultpolicy.Bundle(), BundleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, n := range []string{".manifest", "admission.rego"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "policy", n))
		if err != nil {
			t.Fatal(err)
		}
		files[n] = string(b)
	}
	if pol.Revision() != "builtin" || pol.Digest() != shellDirHash(files) {
		t.Errorf("default bundle: revision %q digest %s; want builtin, %s", pol.Revision(), pol.Digest(), shellDirHash(files))
	}
	if deny, err := pol.Evaluate(t.Context(), good()); err != nil || len(deny) != 0 {
		t.Errorf("default bundle on a good input: %v, %v", deny, err)
	}
}

// TestLoadBundleRefuses: every way a bundle is unusable fails with
// ErrBundle and a message that says what to fix.
func TestLoadBundleRefuses(t *testing.T) {
	with := func(mod func(map[string]string)) map[string]string {
		f := goodFiles()
		mod(f)
		return f
	}
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"no manifest", with(func(f map[string]string) { delete(f, ".manifest") }), "no .manifest"},
		{"manifest not JSON", with(func(f map[string]string) { f[".manifest"] = `{"revision": ` }), "manifest decode"},
		{"no revision", with(func(f map[string]string) { f[".manifest"] = `{"roots": ["custody/admission"]}` }), "no revision"},
		{"roots exclude the policy", with(func(f map[string]string) { f[".manifest"] = `{"revision": "1", "roots": ["other"]}` }), "do not permit"},
		{"rego v0", with(func(f map[string]string) {
			f[".manifest"] = `{"revision": "1", "rego_version": 0}`
			f["admission.rego"] = "package custody.admission\n\ndeny[msg] { false; msg := \"x\" }\n"
		}), "Rego v1 only"},
		{"revision with a newline", with(func(f map[string]string) { f[".manifest"] = `{"revision": "1\n2"}` }), "printable"},
		{"no deny rule", with(func(f map[string]string) { f["admission.rego"] = "package custody.admission\n\nallow := true\n" }), "no deny rule"},
		{"no admission package", with(func(f map[string]string) {
			f["admission.rego"] = "package custody.admission_other\n\ndeny contains \"x\" if { false }\n"
			f[".manifest"] = `{"revision": "1"}`
		}), "no module of package custody.admission"},
		{"syntax error", with(func(f map[string]string) { f["admission.rego"] = "package custody.admission\ndeny contains x if {" }), "admission.rego"},
		{"unsafe builtin", with(func(f map[string]string) {
			f["admission.rego"] = "package custody.admission\n\ndeny contains x if { x := opa.runtime().env.HOME }\n"
		}), "opa.runtime"},
		{"wasm", with(func(f map[string]string) { f["policy.wasm"] = "\x00asm" }), "wasm"},
		{"delta bundle", with(func(f map[string]string) { f["patch.json"] = `{"data": []}` }), "delta"},
		{"bad data", with(func(f map[string]string) { f["custody/admission/config/data.json"] = `{` }), "data.json"},
		{"signed without a key", sign(t, goodFiles(), func() []byte { k, _ := signingKey(t); return k }()), "no verification key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, p := range []string{writeDir(t, tt.files), tarball(t, tt.files)} {
				_, err := LoadBundle(t.Context(), p, BundleOptions{})
				if !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("LoadBundle(%s): %v; want ErrBundle mentioning %q", filepath.Base(p), err, tt.want)
				}
			}
		})
	}
	if _, err := LoadBundle(t.Context(), filepath.Join(t.TempDir(), "missing"), BundleOptions{}); !errors.Is(err, ErrBundle) {
		t.Errorf("a missing bundle: %v", err)
	}
	notGz := filepath.Join(t.TempDir(), "b.tar.gz")
	if err := os.WriteFile(notGz, []byte("plain"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBundle(t.Context(), notGz, BundleOptions{}); !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), "gzipped tarball") {
		t.Errorf("not a tarball: %v", err)
	}
	dir := writeDir(t, goodFiles())
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "link.rego")); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBundle(t.Context(), dir, BundleOptions{}); !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), "symbolic links") {
		t.Errorf("a symbolic link in the bundle: %v", err)
	}
}

// TestSignedBundle: with a key configured the bundle must be signed by it
// and every file must match the signature.
func TestSignedBundle(t *testing.T) {
	private, public := signingKey(t)
	otherPrivate, otherPublic := signingKey(t)
	signed := sign(t, goodFiles(), private)
	opts := BundleOptions{PublicKey: public}
	for _, p := range []string{writeDir(t, signed), tarball(t, signed)} {
		pol, err := LoadBundle(t.Context(), p, opts)
		if err != nil {
			t.Fatalf("a signed bundle: %v", err)
		}
		if pol.Digest() != shellDirHash(signed) {
			t.Errorf("digest %s, want the dirHash of every file, .signatures.json too", pol.Digest())
		}
	}
	tampered := sign(t, goodFiles(), private)
	tampered["admission.rego"] = strings.Replace(goodRego, "deny contains", "deny_off contains", 1) + "\ndeny contains \"x\" if { false }\n"
	added := sign(t, goodFiles(), private)
	added["extra.rego"] = "package custody.admission\n\nwarn contains \"x\" if { true }\n"
	dropped := sign(t, goodFiles(), private)
	delete(dropped, "custody/admission/config/data.json")
	tests := []struct {
		name  string
		files map[string]string
		opts  BundleOptions
		want  string
	}{
		{"unsigned", goodFiles(), opts, "missing .signatures.json"},
		{"a file changed after signing", tampered, opts, "digest mismatch"},
		{"a file added after signing", added, opts, "not included in bundle signature"},
		{"a file removed after signing", dropped, opts, "not found in the target bundle"},
		{"signed by another key", sign(t, goodFiles(), otherPrivate), opts, "failed to verify"},
		{"HMAC", signed, BundleOptions{PublicKey: public, Algorithm: "HS256"}, "HMAC is refused"},
		{"a private key as the key", signed, BundleOptions{PublicKey: private}, "never a private key"},
		{"another key configured", signed, BundleOptions{PublicKey: otherPublic}, "failed to verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, p := range []string{writeDir(t, tt.files), tarball(t, tt.files)} {
				_, err := LoadBundle(t.Context(), p, tt.opts)
				if !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("LoadBundle(%s): %v; want ErrBundle mentioning %q", filepath.Base(p), err, tt.want)
				}
			}
		})
	}
}

// TestParseTarball: the tarball reader refuses what could escape the
// bundle, hide a second copy of a file, or exhaust memory.
func TestParseTarball(t *testing.T) {
	tests := []struct {
		name    string
		entries []tarEntry
		want    string
	}{
		{"dot-dot", []tarEntry{{name: "../evil.rego", body: "x"}}, "not a clean path"},
		{"twice", []tarEntry{{name: "/a.rego", body: "x"}, {name: "a.rego", body: "y"}}, "twice"},
		{"symlink", []tarEntry{{name: "a.rego", typ: tar.TypeSymlink}}, "not a regular file"},
		{"hard link", []tarEntry{{name: "a.rego", typ: tar.TypeLink}}, "not a regular file"},
		{"one file too large", []tarEntry{{name: "big.rego", body: strings.Repeat("x", MaxBundleFileBytes+1)}}, "more than"},
		{"too many files", func() []tarEntry {
			var es []tarEntry
			for i := range MaxBundleFiles + 1 {
				es = append(es, tarEntry{name: fmt.Sprintf("f%d.json", i), body: "{}"})
			}
			return es
		}(), "more than 1024 files"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseTarball(bytes.NewReader(tarGz(t, tt.entries)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parseTarball: %v; want an error mentioning %q", err, tt.want)
			}
		})
	}
	var es []tarEntry
	for i := range 5 {
		es = append(es, tarEntry{name: fmt.Sprintf("f%d.rego", i), body: strings.Repeat("x", MaxBundleFileBytes)})
	}
	if _, err := parseTarball(bytes.NewReader(tarGz(t, es))); err == nil || !strings.Contains(err.Error(), "in all") {
		t.Errorf("40 MiB in all: %v; want the total bound", err)
	}
}

// FuzzLoadTarball: any bytes given as a bundle tarball are refused with
// ErrBundle or load as a policy; never a panic.
func FuzzLoadTarball(f *testing.F) {
	var entries []tarEntry
	for n, c := range goodFiles() {
		entries = append(entries, tarEntry{name: "/" + n, body: c})
	}
	f.Add(tarGz(f, entries))
	f.Add(tarGz(f, []tarEntry{{name: ".manifest", body: `{"revision": "r"}`}, {name: "a.rego", body: "package custody.admission\ndeny contains 1 if { false }"}}))
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, b []byte) {
		files, err := parseTarball(bytes.NewReader(b))
		if err != nil {
			return
		}
		p, err := compileBundle(t.Context(), "fuzz", files, BundleOptions{})
		if err != nil {
			if !errors.Is(err, ErrBundle) {
				t.Fatalf("error %v does not wrap ErrBundle", err)
			}
			return
		}
		if p.Revision() == "" || !strings.HasPrefix(p.Digest(), "dirHash:") {
			t.Fatalf("loaded a bundle without revision (%q) or digest (%q)", p.Revision(), p.Digest())
		}
	})
}
