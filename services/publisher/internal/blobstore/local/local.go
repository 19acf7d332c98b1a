// Package local is a blob-store back end on a local filesystem: every
// object is written to a temporary file, fsynced, linked into place
// (an atomic create-if-absent) and its directory fsynced.
package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/custody-dev/custody/services/publisher/internal/blobstore"
	"github.com/custody-dev/custody/services/publisher/internal/directio"
)

// Store keeps objects under dir/objects/<name>. It is safe for concurrent
// use, also by several processes sharing dir.
type Store struct {
	dir string
}

var _ blobstore.Backend = (*Store)(nil)

// New prepares dir and removes temporary files left by a crash.
func New(dir string) (*Store, error) {
	for _, d := range []string{"objects", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("open blob store %s: %w", dir, err)
		}
	}
	stale, _ := filepath.Glob(filepath.Join(dir, "tmp", "write-*"))
	for _, f := range stale {
		os.Remove(f)
	}
	return &Store{dir: dir}, nil
}

func (s *Store) path(name string) (string, error) {
	if !blobstore.ValidName(name) {
		return "", fmt.Errorf("%w: %q", blobstore.ErrInvalid, name)
	}
	return filepath.Join(s.dir, "objects", filepath.FromSlash(name)), nil
}

// temp writes r to a fsynced temporary file and returns it open. A stream
// (direct) goes to the device in blocks; a record or a file does not.
func (s *Store) temp(r io.Reader, direct bool) (*os.File, int64, error) {
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "write-*")
	if err != nil {
		return nil, 0, err
	}
	// A file is copied by the kernel (copy_file_range). Anything else (the
	// sealer, whose WriteTo writes each sealed chunk) goes to the device
	// directly, in blocks, while the next ones are sealed (decision 0127).
	var n int64
	if _, file := r.(*os.File); file || !direct {
		n, err = io.Copy(tmp, r)
	} else {
		w := directio.NewWriter(tmp, 0)
		n, err = io.Copy(w, r)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = tmp.Sync()
	}
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, 0, err
	}
	return tmp, n, nil
}

// place links or renames the temporary file to path and fsyncs the
// directory; the temporary name is always removed.
func place(tmp *os.File, path string, replace bool) error {
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if replace {
		if err := os.Rename(tmp.Name(), path); err != nil {
			return err
		}
	} else if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return blobstore.ErrExists
		}
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Write implements blobstore.Backend.
func (s *Store) Write(ctx context.Context, name string, r io.Reader) (int64, error) {
	path, err := s.path(name)
	if err != nil {
		return 0, err
	}
	tmp, n, err := s.temp(r, true)
	if err != nil {
		return 0, fmt.Errorf("write object %s: %w", name, err)
	}
	if err := place(tmp, path, false); err != nil {
		return 0, fmt.Errorf("write object %s: %w", name, err)
	}
	return n, nil
}

var _ blobstore.Linker = (*Store)(nil)

// Link implements blobstore.Linker: the file is fsynced, hard-linked into
// place (an atomic create-if-absent) and its directory fsynced. A file on
// another filesystem is errors.ErrUnsupported.
func (s *Store) Link(ctx context.Context, name, path string) error {
	dst, err := s.path(name)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("link object %s: %w", name, err)
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return fmt.Errorf("link object %s: %w", name, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("link object %s: %w", name, err)
	}
	if err := os.Link(path, dst); err != nil {
		switch {
		case errors.Is(err, fs.ErrExist):
			return fmt.Errorf("link object %s: %w", name, blobstore.ErrExists)
		case errors.Is(err, syscall.EXDEV):
			return fmt.Errorf("link object %s: %w: %v", name, errors.ErrUnsupported, err)
		}
		return fmt.Errorf("link object %s: %w", name, err)
	}
	d, err := os.Open(filepath.Dir(dst))
	if err == nil {
		err = d.Sync()
		d.Close()
	}
	if err != nil {
		os.Remove(dst)
		return fmt.Errorf("link object %s: %w", name, err)
	}
	return nil
}

// Create implements blobstore.Backend.
func (s *Store) Create(ctx context.Context, name string, data []byte) error {
	path, err := s.path(name)
	if err != nil {
		return err
	}
	tmp, _, err := s.temp(bytes.NewReader(data), false)
	if err != nil {
		return fmt.Errorf("create object %s: %w", name, err)
	}
	if err := place(tmp, path, false); err != nil {
		return fmt.Errorf("create object %s: %w", name, err)
	}
	return nil
}

// Replace implements blobstore.Backend.
func (s *Store) Replace(ctx context.Context, name string, data []byte) error {
	path, err := s.path(name)
	if err != nil {
		return err
	}
	tmp, _, err := s.temp(bytes.NewReader(data), false)
	if err != nil {
		return fmt.Errorf("replace object %s: %w", name, err)
	}
	if err := place(tmp, path, true); err != nil {
		return fmt.Errorf("replace object %s: %w", name, err)
	}
	return nil
}

// Get implements blobstore.Backend.
func (s *Store) Get(ctx context.Context, name string) ([]byte, error) {
	path, err := s.path(name)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", blobstore.ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read object %s: %w", name, err)
	}
	return b, nil
}

// Open implements blobstore.Backend.
func (s *Store) Open(ctx context.Context, name string, offset int64) (io.ReadCloser, int64, error) {
	path, err := s.path(name)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("%w: %s", blobstore.ErrNotFound, name)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open object %s: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open object %s: %w", name, err)
	}
	if offset < 0 || offset > fi.Size() {
		f.Close()
		return nil, 0, fmt.Errorf("%w: offset %d of object %s of %d bytes", blobstore.ErrInvalid, offset, name, fi.Size())
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open object %s: %w", name, err)
	}
	return f, fi.Size(), nil
}

// Delete implements blobstore.Backend.
func (s *Store) Delete(ctx context.Context, name string) error {
	path, err := s.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete object %s: %w", name, err)
	}
	return nil
}

// List implements blobstore.Backend.
func (s *Store) List(ctx context.Context, prefix string, fn func(string) error) error {
	if !blobstore.ValidPrefix(prefix) {
		return fmt.Errorf("%w: prefix %q", blobstore.ErrInvalid, prefix)
	}
	root := filepath.Join(s.dir, "objects")
	err := filepath.WalkDir(filepath.Join(root, filepath.FromSlash(prefix)), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		return fn(filepath.ToSlash(rel))
	})
	if err != nil {
		return fmt.Errorf("list objects under %s: %w", prefix, err)
	}
	return nil
}
