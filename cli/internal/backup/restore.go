package backup

import (
	"fmt"
	"os"
	"path/filepath"
)

// RestoreOptions configures Restore.
type RestoreOptions struct {
	VerifyOptions
	// Site is the directory to restore into. It must be absent or empty,
	// except for a keys/ directory: the development stand-in for the Vault
	// or HSM keys, which a backup never carries.
	Site string
}

// RestoreReport is the verification report and what was written.
type RestoreReport struct {
	*Report
	Site     string `json:"site"`
	Restored int    `json:"restored"`
}

// ErrRefused wraps a restore of a set that does not verify; nothing was
// written.
var ErrRefused = fmt.Errorf("restore refused")

// Restore verifies the set in dir and, only if it verifies, copies every
// listed file into the empty site, re-hashing as it copies (a file changed
// after verification stops the restore).
func Restore(dir string, o RestoreOptions) (*RestoreReport, error) {
	entries, err := os.ReadDir(o.Site)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	for _, e := range entries {
		if e.Name() != "keys" {
			return nil, fmt.Errorf("site %s is not empty (it has %s): restore only into an empty site", o.Site, e.Name())
		}
	}
	rep, err := Verify(dir, o.VerifyOptions)
	if err != nil {
		return nil, err
	}
	out := &RestoreReport{Report: rep, Site: o.Site}
	if !rep.OK {
		return out, fmt.Errorf("%w: backup set %s does not verify (%d problems), nothing was restored", ErrRefused, dir, len(rep.Problems))
	}
	mb, err := readBounded(filepath.Join(dir, ManifestFile), MaxManifestSize)
	if err != nil {
		return out, err
	}
	m, err := ParseManifest(mb)
	if err != nil {
		return out, err
	}
	for _, f := range m.Files {
		dst := filepath.Join(o.Site, filepath.FromSlash(f.Path))
		d, n, err := copyFile(filepath.Join(dir, filepath.FromSlash(f.Path)), dst)
		if err != nil {
			return out, fmt.Errorf("restore %s: %w", f.Path, err)
		}
		if d != f.SHA256 || n != f.Size {
			return out, fmt.Errorf("%w: %s changed during the restore (%s, want %s): the site is incomplete, empty it and restore again", ErrRefused, f.Path, d, f.SHA256)
		}
		// The restored site is live state, writable by its services.
		if err := os.Chmod(dst, 0o600); err != nil {
			return out, err
		}
		out.Restored++
	}
	return out, syncDir(o.Site)
}
