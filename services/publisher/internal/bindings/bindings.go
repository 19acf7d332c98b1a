// Package bindings records which digest each name@version is bound to. A
// binding is made once, atomically and durably, and never changes.
package bindings

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrConflict means name@version is already bound to other bytes.
var ErrConflict = errors.New("already bound to another digest")

// ErrDeleted means name@version was deleted by retention: it stays
// unbindable, so a name@version never names two different artifacts.
var ErrDeleted = errors.New("was deleted by retention")

// Binding is one name@version → digest record.
type Binding struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Digest  string `json:"digest"`
	Size    int64  `json:"size"`
	// Deleted is set on a tombstone: when retention deleted the binding.
	Deleted *time.Time `json:"retention_deleted,omitempty"`
}

// Store keeps one file per binding under dir, named by the hash of
// name@version (names may contain slashes), created with link so that two
// concurrent binders cannot both win.
type Store struct{ dir string }

// Open prepares dir and removes the temporary files a crash left (one
// publisher owns its bindings directory).
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("open bindings: %w", err)
	}
	for _, pat := range []string{"bind-*", "tomb-*"} {
		stale, _ := filepath.Glob(filepath.Join(dir, "tmp", pat))
		for _, f := range stale {
			os.Remove(f)
		}
	}
	return &Store{dir: dir}, nil
}

func (s *Store) path(name, version string) string {
	sum := sha256.Sum256([]byte(name + "@" + version))
	return filepath.Join(s.dir, hex.EncodeToString(sum[:])+".json")
}

// Bind binds b.Name@b.Version to b.Digest. It returns created=false if the
// same binding already existed, and ErrConflict naming the existing digest
// if another one did.
func (s *Store) Bind(b Binding) (created bool, err error) {
	final := s.path(b.Name, b.Version)
	if existing, err := s.Get(b.Name, b.Version); err == nil {
		return false, compare(existing, b)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	data, _ := json.Marshal(b)
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "bind-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("bind %s@%s: %w", b.Name, b.Version, err)
	}
	if err := os.Link(tmp.Name(), final); errors.Is(err, fs.ErrExist) {
		existing, gerr := s.Get(b.Name, b.Version)
		if gerr != nil {
			return false, gerr
		}
		return false, compare(existing, b)
	} else if err != nil {
		return false, fmt.Errorf("bind %s@%s: %w", b.Name, b.Version, err)
	}
	d, err := os.Open(s.dir)
	if err == nil {
		err = d.Sync()
		d.Close()
	}
	return true, err
}

func compare(existing *Binding, b Binding) error {
	if existing.Deleted != nil {
		return fmt.Errorf("%s@%s %w at %s", b.Name, b.Version, ErrDeleted, existing.Deleted.UTC().Format(time.RFC3339))
	}
	if existing.Digest != b.Digest {
		return fmt.Errorf("%s@%s is %w %s", b.Name, b.Version, ErrConflict, existing.Digest)
	}
	return nil
}

// Get returns the binding of name@version, or an error wrapping
// fs.ErrNotExist.
func (s *Store) Get(name, version string) (*Binding, error) {
	data, err := os.ReadFile(s.path(name, version))
	if err != nil {
		return nil, err
	}
	var b Binding
	if err := json.Unmarshal(data, &b); err != nil || b.Name != name || b.Version != version {
		return nil, fmt.Errorf("binding of %s@%s is damaged", name, version)
	}
	return &b, nil
}

// Tombstone marks name@version deleted by retention at at, atomically and
// durably. Its digest is kept; Bind then refuses the name@version with
// ErrDeleted. Tombstoning a missing binding or a tombstone is not an
// error (nothing changes).
func (s *Store) Tombstone(name, version string, at time.Time) error {
	b, err := s.Get(name, version)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if b.Deleted != nil {
		return nil
	}
	at = at.UTC()
	b.Deleted = &at
	data, _ := json.Marshal(b)
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "tomb-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path(name, version))
	}
	if err != nil {
		return fmt.Errorf("tombstone %s@%s: %w", name, version, err)
	}
	d, err := os.Open(s.dir)
	if err == nil {
		err = d.Sync()
		d.Close()
	}
	return err
}

// List calls fn with every binding, tombstones included, in no particular
// order, stopping at fn's first error. A damaged binding file is an error.
func (s *Store) List(fn func(Binding) error) error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("list bindings: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			return fmt.Errorf("list bindings: %w", err)
		}
		var b Binding
		if err := json.Unmarshal(data, &b); err != nil || s.path(b.Name, b.Version) != filepath.Join(s.dir, e.Name()) {
			return fmt.Errorf("list bindings: binding file %s is damaged", e.Name())
		}
		if err := fn(b); err != nil {
			return err
		}
	}
	return nil
}
