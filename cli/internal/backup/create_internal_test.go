package backup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
)

// site writes files (site-relative path → content) under a new site
// directory.
func site(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func createOptions(t *testing.T, siteDir string) CreateOptions {
	t.Helper()
	const origin = "custody.test/log"
	skey, vkey, err := tlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := tlog.SignCheckpoint(tlog.Checkpoint{Origin: origin, Size: 1, Hash: make([]byte, 32)}, skey)
	if err != nil {
		t.Fatal(err)
	}
	return CreateOptions{Site: siteDir, Dir: filepath.Join(t.TempDir(), "set"), Name: "test",
		Checkpoint: func(context.Context) ([]byte, error) { return signed, nil },
		Sign:       func(context.Context, []byte) ([]byte, error) { return []byte("{}"), nil },
		Root:       &trustroot.Root{Version: 1, LogKeys: []trustroot.LogKey{{Origin: origin, VerifierKey: vkey}}},
		Now:        func() time.Time { return time.Unix(1e9, 0) }}
}

// TestCreateWithALiveLog: a partial tile that Tessera replaces by the full
// one while the backup runs is left out and the full tile taken instead; a
// vanished file of any other kind fails the backup.
func TestCreateWithALiveLog(t *testing.T) {
	const partial, full = "data/catalog/log/tile/entries/000.p/1", "data/catalog/log/tile/entries/000"
	dir := site(t, map[string]string{
		partial:                           "one entry",
		"data/catalog/log/checkpoint":     "cp",
		"data/catalog/catalog.db":         "db",
		"data/catalog/log/tile/0/000.p/1": "hash",
		// A temporary file of Tessera's is never listed.
		"data/catalog/log/tile/entries/000.p/1827364": "half written",
	})
	defer func() { beforeCopy = func(string) {} }()
	beforeCopy = func(p string) {
		if p == partial {
			if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(full)), []byte("256 entries"), 0o600); err != nil {
				t.Error(err)
			}
			if err := os.Remove(filepath.Join(dir, filepath.FromSlash(partial))); err != nil {
				t.Error(err)
			}
		}
	}
	o := createOptions(t, dir)
	rep, err := Create(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(o.Dir, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range m.Files {
		paths = append(paths, f.Path)
	}
	want := []string{"data/catalog/catalog.db", "data/catalog/log/checkpoint", "data/catalog/log/tile/0/000.p/1", full}
	if strings.Join(paths, " ") != strings.Join(want, " ") || rep.Files != len(want) {
		t.Errorf("backed up %v (%d files), want %v", paths, rep.Files, want)
	}
	if _, err := os.Stat(filepath.Join(o.Dir, filepath.FromSlash(partial))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the vanished partial is in the set: %v", err)
	}

	// A blob that vanishes is an error, not a smaller backup.
	const blob = "data/publisher/blobs/objects/data/ab/abcd"
	dir = site(t, map[string]string{blob: "ciphertext", "data/catalog/log/checkpoint": "cp"})
	beforeCopy = func(p string) {
		if p == blob {
			os.Remove(filepath.Join(dir, filepath.FromSlash(blob)))
		}
	}
	if _, err := Create(t.Context(), createOptions(t, dir)); err == nil || !strings.Contains(err.Error(), blob) {
		t.Errorf("a blob vanished during the backup: %v, want an error naming it", err)
	}

	// A log that keeps replacing its files gives up, saying so.
	dir = site(t, map[string]string{partial: "x", "data/catalog/log/checkpoint": "cp"})
	n := 0
	beforeCopy = func(p string) {
		if strings.HasPrefix(p, "data/catalog/log/tile/entries/") {
			n++
			next := filepath.Join(dir, "data/catalog/log/tile/entries/000.p", strconv.Itoa(n+1))
			os.WriteFile(next, []byte("x"), 0o600)
			os.Remove(filepath.Join(dir, filepath.FromSlash(p)))
		}
	}
	if _, err := Create(t.Context(), createOptions(t, dir)); err == nil || !strings.Contains(err.Error(), "try again") {
		t.Errorf("a log replacing every file: %v, want an error saying to try again", err)
	}
}
