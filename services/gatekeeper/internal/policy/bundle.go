package policy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader/filter"
	"golang.org/x/mod/sumdb/dirhash"
)

// Bounds on a policy bundle. A bundle is read once at start, but it is
// still bytes from a file an operator points at: a gzip bomb or a tree of
// a million files must fail with a clear error, not exhaust memory.
const (
	MaxBundleFiles     = 1024
	MaxBundleFileBytes = 8 << 20
	MaxBundleBytes     = 32 << 20
)

// DigestAlgorithm names how a bundle's digest is computed: the in-toto
// DigestSet's dirHash (golang.org/x/mod/sumdb/dirhash Hash1, in lowercase
// hex): the SHA-256 of the sorted "sha256sum" lines of every file in the
// bundle, the same for a directory and for a tarball of the same files.
// In a directory, `find . -type f | cut -c3- | LC_ALL=C sort | xargs -r
// sha256sum | sha256sum` prints it.
const DigestAlgorithm = "dirHash"

// ErrBundle is returned (wrapped) when a policy bundle cannot be used:
// unreadable, over a bound, malformed, unsigned or wrongly signed when a
// signature is required, or without the admission rules. The gatekeeper
// does not start with such a bundle.
var ErrBundle = errors.New("policy bundle refused")

// BundleOptions configures LoadBundle.
type BundleOptions struct {
	// PublicKey, if set, is a PEM public key (PKIX "PUBLIC KEY", or an
	// X.509 certificate) that must have signed the bundle: its
	// .signatures.json, as `opa build --signing-key` or `opa sign` write
	// it, must verify with this key and cover every file. Unset, a bundle
	// must be unsigned (a signature nothing checks would look like a
	// guarantee).
	PublicKey []byte
	// Algorithm is the signature's JWS algorithm (ES256, ES384, ES512,
	// RS256, RS384, RS512, PS256, PS384, PS512, EdDSA); default ES256.
	// HMAC algorithms are refused: a shared secret can sign as well as
	// verify.
	Algorithm string
	// KeyID is the key id the signature must name; default "custody".
	KeyID string
	// Options apply to the compiled policy.
	Options []Option
}

// DefaultKeyID is the key id a signed bundle names when BundleOptions.KeyID
// is unset (`opa build --signing-key K --signing-alg ES256` with
// `.signatures.json` keyid "custody": pass `--claims-file` or sign with
// a key id).
const DefaultKeyID = "custody"

var signatureAlgorithms = []string{"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}

// LoadBundle reads the OPA bundle at p, a directory or a gzipped tarball
// (.tar.gz, as `opa build` writes it), checks it and compiles its admission
// policy. The bundle must have a .manifest with a revision; its roots, if
// given, must cover every module and data file; it must hold a module of
// package custody.admission that defines deny; it may hold data.json files
// (under its roots) and Rego tests, and nothing OPA would not evaluate here
// (wasm, plans, delta patches). Errors wrap ErrBundle and name the file.
func LoadBundle(ctx context.Context, p string, opts BundleOptions) (*Policy, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBundle, err)
	}
	var files []bundleFile
	if fi.IsDir() {
		files, err = readDir(os.DirFS(p))
	} else {
		files, err = readTarball(p)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBundle, p, err)
	}
	return compileBundle(ctx, p, files, opts)
}

// LoadBundleFS is LoadBundle for a bundle laid out in fsys (the embedded
// default policy), named name in errors.
func LoadBundleFS(ctx context.Context, name string, fsys fs.FS, opts BundleOptions) (*Policy, error) {
	files, err := readDir(fsys)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBundle, name, err)
	}
	return compileBundle(ctx, name, files, opts)
}

// bundleFile is one regular file of a bundle: its slash-separated path
// relative to the bundle's root, and its bytes.
type bundleFile struct {
	name string
	data []byte
}

// budget counts what a bundle may still hold.
type budget struct {
	files int
	bytes int64
}

func (b *budget) take(name string, size int64) error {
	b.files++
	b.bytes += size
	switch {
	case b.files > MaxBundleFiles:
		return fmt.Errorf("more than %d files", MaxBundleFiles)
	case size > MaxBundleFileBytes:
		return fmt.Errorf("%s: %d bytes, more than %d", name, size, MaxBundleFileBytes)
	case b.bytes > MaxBundleBytes:
		return fmt.Errorf("more than %d bytes in all", MaxBundleBytes)
	}
	return nil
}

// readDir reads every regular file under fsys. Symbolic links and other
// special files are refused: what the digest covers must be what is in
// the directory.
func readDir(fsys fs.FS) ([]bundleFile, error) {
	var files []bundleFile
	var b budget
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file (symbolic links are not followed)", name)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if err := b.take(name, fi.Size()); err != nil {
			return err
		}
		data, err := readBounded(fsys, name)
		if err != nil {
			return err
		}
		files = append(files, bundleFile{name: name, data: data})
		return nil
	})
	return files, err
}

func readBounded(fsys fs.FS, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxBundleFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxBundleFileBytes {
		return nil, fmt.Errorf("%s: more than %d bytes", name, MaxBundleFileBytes)
	}
	return data, nil
}

func readTarball(p string) ([]bundleFile, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseTarball(f)
}

// parseTarball reads a gzipped tar of a bundle: regular files and
// directories only, each path once, none outside the root.
func parseTarball(r io.Reader) ([]bundleFile, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("not a gzipped tarball (give a bundle directory or a .tar.gz from `opa build`): %w", err)
	}
	// Bound what is decompressed, whatever the headers claim.
	tr := tar.NewReader(io.LimitReader(gz, MaxBundleBytes+MaxBundleFiles*1024+1))
	var files []bundleFile
	seen := map[string]bool{}
	var b budget
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read tarball: %w", err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			return nil, fmt.Errorf("%q: not a regular file or directory", clip(h.Name))
		}
		name, err := cleanName(h.Name)
		if err != nil {
			return nil, err
		}
		if seen[name] {
			return nil, fmt.Errorf("%s: twice in the tarball", name)
		}
		seen[name] = true
		if err := b.take(name, h.Size); err != nil {
			return nil, err
		}
		data, err := io.ReadAll(io.LimitReader(tr, MaxBundleFileBytes+1))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		if int64(len(data)) != h.Size {
			return nil, fmt.Errorf("%s: %d bytes, its header says %d", name, len(data), h.Size)
		}
		files = append(files, bundleFile{name: name, data: data})
	}
	if _, err := io.Copy(io.Discard, io.LimitReader(gz, 1<<20)); err != nil {
		return nil, fmt.Errorf("read tarball: %w", err)
	}
	return files, nil
}

// cleanName is a tarball member's path relative to the bundle root, as
// `opa build` writes them ("/policy.rego") or plain ("policy.rego").
func cleanName(n string) (string, error) {
	c := path.Clean("/" + n)
	name := strings.TrimPrefix(c, "/")
	if name == "" || name == "." || strings.Contains(n, "..") || strings.ContainsAny(name, "\n\r\x00\\") {
		return "", fmt.Errorf("%q: not a clean path inside the bundle", clip(n))
	}
	return name, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// dirHashOf is the bundle's digest (DigestAlgorithm), in lowercase hex.
func dirHashOf(files []bundleFile) (string, error) {
	byName := make(map[string][]byte, len(files))
	names := make([]string, 0, len(files))
	for _, f := range files {
		byName[f.name] = f.data
		names = append(names, f.name)
	}
	h1, err := dirhash.Hash1(names, func(n string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(byName[n])), nil
	})
	if err != nil {
		return "", err
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(h1, "h1:"))
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(raw), nil
}

// filesLoader hands files read by Custody to OPA's bundle reader.
type filesLoader struct {
	files []bundleFile
	next  int
}

var _ bundle.DirectoryLoader = (*filesLoader)(nil)

func (l *filesLoader) NextFile() (*bundle.Descriptor, error) {
	if l.next >= len(l.files) {
		return nil, io.EOF
	}
	f := l.files[l.next]
	l.next++
	p := "/" + f.name
	return bundle.NewDescriptor(p, p, bytes.NewBuffer(f.data)), nil
}

func (l *filesLoader) WithFilter(filter.LoaderFilter) bundle.DirectoryLoader   { return l }
func (l *filesLoader) WithPathFormat(bundle.PathFormat) bundle.DirectoryLoader { return l }
func (l *filesLoader) WithSizeLimitBytes(int64) bundle.DirectoryLoader         { return l }
func (l *filesLoader) WithFollowSymlinks(bool) bundle.DirectoryLoader          { return l }

func verification(opts BundleOptions) (*bundle.VerificationConfig, error) {
	if len(opts.PublicKey) == 0 {
		return nil, nil
	}
	alg := opts.Algorithm
	if alg == "" {
		alg = "ES256"
	}
	if !slices.Contains(signatureAlgorithms, alg) {
		return nil, fmt.Errorf("signature algorithm %q: want one of %s (HMAC is refused: a shared secret can sign too)", clip(alg), strings.Join(signatureAlgorithms, ", "))
	}
	if !strings.Contains(string(opts.PublicKey), "-----BEGIN PUBLIC KEY-----") && !strings.Contains(string(opts.PublicKey), "-----BEGIN CERTIFICATE-----") {
		return nil, errors.New("the bundle verification key must be a PEM public key (BEGIN PUBLIC KEY) or certificate, never a private key")
	}
	id := opts.KeyID
	if id == "" {
		id = DefaultKeyID
	}
	keys := map[string]*bundle.KeyConfig{id: {Key: string(opts.PublicKey), Algorithm: alg}}
	return bundle.NewVerificationConfig(keys, id, "", nil), nil
}

// compileBundle checks files as a bundle and compiles its policy.
func compileBundle(ctx context.Context, name string, files []bundleFile, opts BundleOptions) (*Policy, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBundle, name, fmt.Sprintf(format, args...))
	}
	vc, err := verification(opts)
	if err != nil {
		return nil, fail("%v", err)
	}
	manifest := false
	for _, f := range files {
		switch {
		case f.name == bundle.ManifestExt:
			manifest = true
		case strings.HasSuffix(f.name, ".wasm") || path.Base(f.name) == bundle.PlanFile || path.Base(f.name) == bundle.PlanProtoFile:
			return nil, fail("%s: wasm modules and plans are not evaluated by the gatekeeper; give Rego source", f.name)
		case path.Base(f.name) == "patch.json":
			return nil, fail("%s: delta bundles are not accepted; give a whole (snapshot) bundle", f.name)
		case path.Base(f.name) == bundle.ManifestProtoExt:
			return nil, fail("%s: give the manifest as JSON (.manifest)", f.name)
		}
	}
	if !manifest {
		return nil, fail(`no .manifest: a policy bundle names its revision, e.g. {"revision": "2026-12-03.1", "roots": ["custody/admission"]}`)
	}
	if vc == nil && slices.ContainsFunc(files, func(f bundleFile) bool { return bundle.IsSignaturesFile(f.name) }) {
		return nil, fail("the bundle is signed but no verification key is configured: give --policy-bundle-key, or remove .signatures.json")
	}
	sum, err := dirHashOf(files)
	if err != nil {
		return nil, fail("digest: %v", err)
	}
	r := bundle.NewCustomReader(&filesLoader{files: files}).
		WithRegoVersion(ast.RegoV1).
		WithSizeLimitBytes(MaxBundleFileBytes).
		WithLazyLoadingMode(false)
	if vc != nil {
		r = r.WithBundleVerificationConfig(vc)
	}
	b, err := r.Read()
	if err != nil {
		return nil, fail("%v", err)
	}
	if strings.TrimSpace(b.Manifest.Revision) == "" {
		return nil, fail(`.manifest has no revision: set "revision" to the version of this policy, e.g. "2026-12-03.1"`)
	}
	if len(b.Manifest.Revision) > 256 || strings.ContainsFunc(b.Manifest.Revision, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return nil, fail(".manifest revision: want at most 256 printable characters")
	}
	if rv := b.Manifest.RegoVersion; (rv != nil && *rv != 1) || len(b.Manifest.FileRegoVersions) > 0 {
		return nil, fail(".manifest rego_version: the gatekeeper evaluates Rego v1 only (rego_version 1, no file_rego_versions)")
	}
	if len(b.WasmModules) > 0 || len(b.PlanModules) > 0 || len(b.Patch.Data) > 0 {
		return nil, fail("only Rego modules and data are evaluated")
	}
	mods := make([]*ast.Module, 0, len(b.Modules))
	for _, m := range b.Modules {
		mods = append(mods, m.Parsed)
	}
	slices.SortFunc(mods, func(a, b *ast.Module) int { return strings.Compare(moduleName(a), moduleName(b)) })
	p, err := compile(ctx, name, mods, b.Data, DigestAlgorithm+":"+sum, opts.Options...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBundle, err)
	}
	p.revision = b.Manifest.Revision
	return p, nil
}

func moduleName(m *ast.Module) string {
	if m.Package != nil && m.Package.Location != nil {
		return m.Package.Location.File
	}
	return ""
}
