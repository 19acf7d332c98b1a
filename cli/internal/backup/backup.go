// Package backup writes, verifies and restores Custody backup sets: the
// files of a site's stores, a manifest of their SHA-256 digests signed by
// the signer's backup key, and the log's last co-signed checkpoint
// (docs/decisions/0056-backup-set-format.md).
package backup

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/strictjson"
)

// Format is the manifest's format field.
const Format = "custody-backup/v1"

// Names of the set's own files, beside the copied stores.
const (
	ManifestFile   = "manifest.json"
	SignatureFile  = "manifest.dsse.json"
	CheckpointFile = "checkpoint.cosigned"
)

// Bounds on what Verify reads into memory; every other file is streamed.
const (
	MaxManifestSize   = 64 << 20
	MaxSignatureSize  = 1 << 20
	MaxCheckpointSize = 64 << 10
	MaxFiles          = 1 << 20
)

// Kinds of files, as the manifest and reports name them.
const (
	KindBlob       = "blob"        // ciphertext of an artifact
	KindWrappedKey = "wrapped-key" // a blob's record: its data key wrapped by the KEK
	KindBinding    = "binding"     // a name@version → digest binding
	KindCatalog    = "catalog"     // the catalog's SQLite database and its WAL
	KindLogTile    = "log-tile"    // a Tessera hash tile
	KindLogEntries = "log-entries" // a Tessera entry bundle
	KindLogState   = "log-state"   // the log's checkpoint and Tessera's tree state
	KindSigner     = "signer-state"
	KindTrustRoot  = "trust-root"
)

// Manifest is manifest.json: every file of the set but the three set files,
// sorted by path.
type Manifest struct {
	Format  string    `json:"format"`
	Site    string    `json:"site"`
	Created time.Time `json:"created"`
	Files   []File    `json:"files"`
}

// File is one file of the set.
type File struct {
	// Path is slash-separated, relative to the set and to the site.
	Path   string `json:"path"`
	Kind   string `json:"kind"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // "sha256:<hex>"
}

// kindOf classifies a site-relative path, or returns "" for a file that a
// backup leaves out (locks, SQLite's shared-memory index, caches, partial
// uploads, temporary files).
func kindOf(p string) string {
	base := path.Base(p)
	switch {
	case strings.HasSuffix(base, ".lock"), strings.HasPrefix(base, "write-"):
		return ""
	case strings.HasPrefix(p, "data/publisher/blobs/objects/data/"):
		return KindBlob
	case strings.HasPrefix(p, "data/publisher/blobs/objects/keys/"):
		return KindWrappedKey
	case strings.HasPrefix(p, "data/publisher/bindings/"):
		return KindBinding
	case p == "data/catalog/catalog.db", p == "data/catalog/catalog.db-wal":
		return KindCatalog
	case strings.HasPrefix(p, "data/catalog/log/tile/"):
		// Only paths of the tlog-tiles layout: Tessera writes each file
		// under a temporary name (the final one followed by random
		// digits) and renames it, so a listed temporary file may be gone
		// by the time it is copied, and is never part of the log.
		switch m := tilePath.FindStringSubmatch(strings.TrimPrefix(p, "data/catalog/log/")); {
		case m == nil || (m[3] != "" && !validWidth(m[3])):
			return ""
		case m[1] == "entries":
			return KindLogEntries
		default:
			return KindLogTile
		}
	case p == "data/catalog/log/checkpoint":
		return KindLogState
	case strings.HasPrefix(p, "data/catalog/log/.state/"):
		if stateTemp.MatchString(base) {
			return ""
		}
		return KindLogState
	case strings.HasPrefix(p, "data/signer/"):
		return KindSigner
	case p == "trust/root.json":
		return KindTrustRoot
	}
	return ""
}

// tilePath is a tile or entry bundle path of the tlog-tiles layout:
// tile/<level or entries>/[x<3 digits>/...]<3 digits>[.p/<width>].
var tilePath = regexp.MustCompile(`^tile/(entries|[0-9]{1,2})/(x[0-9]{3}/)*[0-9]{3}(?:\.p/([0-9]{1,3}))?$`)

// stateTemp is a temporary file of Tessera's state files.
var stateTemp = regexp.MustCompile(`^(version|treeState|gcState)[0-9]+$`)

// validWidth says whether w is a partial tile's width, 1 to 255 without a
// leading zero.
func validWidth(w string) bool {
	n, err := strconv.Atoi(w)
	return err == nil && n >= 1 && n <= 255 && strconv.Itoa(n) == w
}

// Sources are the site directories a backup copies.
var sources = []string{"data/publisher/blobs/objects", "data/publisher/bindings", "data/catalog", "data/signer", "trust"}

// validPath says whether p may name a file of a set: clean, relative,
// slash-separated, and of a known kind.
func validPath(p string) bool {
	return p != "" && len(p) < 1024 && !strings.HasPrefix(p, "/") && path.Clean(p) == p && !strings.Contains(p, "\\") &&
		!strings.HasPrefix(p, "../") && p != ".." && kindOf(p) != ""
}

// ParseManifest decodes manifest.json strictly and checks every entry.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := strictjson.Decode(b, MaxManifestSize, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.Format != Format {
		return nil, fmt.Errorf("manifest format %q, want %s", m.Format, Format)
	}
	if len(m.Files) == 0 || len(m.Files) > MaxFiles {
		return nil, fmt.Errorf("manifest lists %d files, want 1 to %d", len(m.Files), MaxFiles)
	}
	seen := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		if !validPath(f.Path) {
			return nil, fmt.Errorf("manifest path %q is not a path a backup set holds", f.Path)
		}
		if seen[f.Path] {
			return nil, fmt.Errorf("manifest lists %q twice", f.Path)
		}
		seen[f.Path] = true
		if f.Kind != kindOf(f.Path) {
			return nil, fmt.Errorf("manifest says %q is a %q, it is a %q", f.Path, f.Kind, kindOf(f.Path))
		}
		if !digest.Valid(f.SHA256) || f.Size < 0 {
			return nil, fmt.Errorf("manifest entry %q: bad digest or size", f.Path)
		}
	}
	return &m, nil
}

// hashFile streams a file through SHA-256.
func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return digest.FromSum(h.Sum(nil)), n, nil
}

// copyFile streams src to a new file dst (never overwriting), fsyncs it,
// makes it read-only, and returns the digest and size of what it wrote.
func copyFile(src, dst string) (string, int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", 0, err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(dst, 0o400)
	}
	if err != nil {
		os.Remove(dst)
		return "", 0, err
	}
	return digest.FromSum(h.Sum(nil)), n, nil
}

// writeNew writes b to a new read-only file.
func writeNew(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(p, 0o400)
	}
	return err
}

// readBounded reads a whole file of at most max bytes.
func readBounded(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, max)
	}
	return b, nil
}

// emptyDir says whether dir is absent or empty.
func emptyDir(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return len(entries) == 0, nil
}

// listSite returns the site-relative paths of every file a backup takes,
// sorted.
func listSite(site string) ([]string, error) {
	var out []string
	for _, src := range sources {
		root := filepath.Join(site, filepath.FromSlash(src))
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) && p == root {
				return nil
			}
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				if d.Type()&fs.ModeSymlink != 0 {
					return fmt.Errorf("%s is a symbolic link: a backup copies regular files only", p)
				}
				return nil
			}
			rel, err := filepath.Rel(site, p)
			if err != nil {
				return err
			}
			if rel = filepath.ToSlash(rel); kindOf(rel) != "" {
				out = append(out, rel)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Strings(out)
	return out, nil
}
