package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
)

// CreateOptions configures Create.
type CreateOptions struct {
	// Site is the site's directory (the dev stack's --dir), Dir the new
	// backup set, which must not exist or be empty.
	Site, Dir string
	// Name labels the site in the signed statement.
	Name string
	// Checkpoint returns the log's latest co-signed checkpoint (the
	// catalog's GetCheckpoint). It is read before any tile is copied, so
	// the copied tiles cover it.
	Checkpoint func(ctx context.Context) ([]byte, error)
	// Sign returns a DSSE envelope over a backup statement (the signer's
	// SignBackupManifest).
	Sign func(ctx context.Context, statement []byte) ([]byte, error)
	// Root is the trust root that lists the log's co-signing key: a
	// checkpoint that does not verify is not backed up.
	Root *trustroot.Root
	Now  func() time.Time
}

// CreateReport is what Create wrote.
type CreateReport struct {
	Dir            string         `json:"dir"`
	ManifestDigest string         `json:"manifest_digest"`
	Files          int            `json:"files"`
	Bytes          int64          `json:"bytes"`
	Kinds          map[string]int `json:"kinds"`
	LogOrigin      string         `json:"log_origin"`
	LogSize        uint64         `json:"log_size"`
}

// maxCopyPasses bounds how many times Create lists the site again after
// log files vanished under it.
const maxCopyPasses = 4

// beforeCopy runs before each file is copied (tests make files vanish).
var beforeCopy = func(string) {}

// isLogKind says whether kind is a file of the live transparency log.
func isLogKind(kind string) bool {
	return kind == KindLogTile || kind == KindLogEntries || kind == KindLogState
}

// Create copies the site's stores into a new backup set, streaming every
// file, and has the manifest signed. Files are written once (O_EXCL) and
// left read-only; on any error the partial set is left for inspection and
// has no signature, so Verify refuses it.
func Create(ctx context.Context, o CreateOptions) (*CreateReport, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if ok, err := emptyDir(o.Dir); err != nil || !ok {
		return nil, fmt.Errorf("backup set %s already exists and is not empty (%v): backup sets are immutable, choose a new directory", o.Dir, err)
	}
	if _, err := os.Stat(filepath.Join(o.Site, "data")); err != nil {
		return nil, fmt.Errorf("site %s has no data directory: %w", o.Site, err)
	}
	signed, err := o.Checkpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the log's co-signed checkpoint: %w", err)
	}
	cp, err := openCheckpoint(signed, o.Root)
	if err != nil {
		return nil, fmt.Errorf("the catalog's checkpoint: %w", err)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	now := o.Now().UTC().Truncate(time.Second)
	m := Manifest{Format: Format, Site: o.Name, Created: now}
	rep := &CreateReport{Dir: o.Dir, Kinds: map[string]int{}, LogOrigin: cp.Origin, LogSize: cp.Size}
	// The log is live while it is copied: Tessera replaces a partial tile
	// by the full one and then removes the partial. A log file that is
	// gone when its turn comes is left out, and the site is listed again
	// for the files that replaced it (the full tiles cover every partial's
	// entries); Verify checks that the set rebuilds the checkpoint.
	copied := map[string]bool{}
	for pass := 1; ; pass++ {
		paths, err := listSite(o.Site)
		if err != nil {
			return nil, fmt.Errorf("list the site's files: %w", err)
		}
		vanished := 0
		for _, p := range paths {
			if copied[p] {
				continue
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			beforeCopy(p)
			d, n, err := copyFile(filepath.Join(o.Site, filepath.FromSlash(p)), filepath.Join(o.Dir, filepath.FromSlash(p)))
			if errors.Is(err, fs.ErrNotExist) && isLogKind(kindOf(p)) {
				vanished++
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("copy %s: %w", p, err)
			}
			copied[p] = true
			m.Files = append(m.Files, File{Path: p, Kind: kindOf(p), Size: n, SHA256: d})
			rep.Kinds[kindOf(p)]++
			rep.Bytes += n
		}
		if vanished == 0 {
			break
		}
		if pass == maxCopyPasses {
			return nil, fmt.Errorf("%d log files were replaced while they were copied, %d times in a row: is the catalog busy? try again", vanished, pass)
		}
	}
	slices.SortFunc(m.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	rep.Files = len(m.Files)
	if err := writeNew(filepath.Join(o.Dir, CheckpointFile), signed); err != nil {
		return nil, err
	}
	mb, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return nil, err
	}
	mb = append(mb, '\n')
	if err := writeNew(filepath.Join(o.Dir, ManifestFile), mb); err != nil {
		return nil, err
	}
	rep.ManifestDigest = digest.Of(mb)
	st, err := attest.BackupStatement(attest.Backup{ManifestDigest: rep.ManifestDigest, Site: o.Name, Created: now,
		LogOrigin: cp.Origin, LogSize: cp.Size, Files: len(m.Files)})
	if err != nil {
		return nil, err
	}
	env, err := o.Sign(ctx, st)
	if err != nil {
		return nil, fmt.Errorf("sign the manifest with the backup key: %w", err)
	}
	if err := writeNew(filepath.Join(o.Dir, SignatureFile), env); err != nil {
		return nil, err
	}
	return rep, syncDir(o.Dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// openCheckpoint verifies a checkpoint with the co-signing key root lists
// for its origin.
func openCheckpoint(signed []byte, root *trustroot.Root) (*tlog.Checkpoint, error) {
	origin, _, _ := strings.Cut(string(signed[:min(len(signed), 1024)]), "\n")
	key, ok := root.LogVerifier(origin)
	if !ok {
		return nil, fmt.Errorf("trust root v%d lists no key for log %q", root.Version, origin)
	}
	return tlog.OpenCosigned(signed, origin, key)
}
