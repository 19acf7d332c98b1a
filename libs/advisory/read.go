package advisory

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/quote"
)

// Read reads the advisories at path, a directory or a zip in the layout of
// OSV's per-ecosystem exports: `<id>.json` files at the top level, nothing
// else. It calls fn with each advisory, in file-name order for a directory
// and archive order for a zip, and stops at fn's first error, which it
// returns as is. The set's bounds (MaxAdvisories, MaxTotalBytes, MaxRatio,
// MaxDocBytes for each document) are checked as it goes; an id seen twice
// and a file whose name is not its document's id are refused. Errors about
// the input match ErrInvalid; an unreadable path is returned wrapped.
func Read(path string, fn func(*Advisory) error) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("read advisories: %w", err)
	}
	if fi.IsDir() {
		return ReadDir(path, fn)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read advisories: %w", err)
	}
	defer f.Close()
	return ReadZip(f, fi.Size(), fn)
}

// maxAdvisories is MaxAdvisories, lowered by tests.
var maxAdvisories = MaxAdvisories

// reader keeps what the bounds of one set need.
type reader struct {
	seen  map[string]bool
	total int64
	fn    func(*Advisory) error
}

func newReader(fn func(*Advisory) error) *reader {
	return &reader{seen: make(map[string]bool), fn: fn}
}

// checkName refuses a file name that is not `<id>.json` at the top level.
func checkName(name string) error {
	id, ok := strings.CutSuffix(name, ".json")
	if !ok || !ValidID(id) {
		return invalid("file %q is not <OSV id>.json: an OSV export holds nothing else", quote.Prefix(name))
	}
	return nil
}

// doc reads one document of at most MaxDocBytes from r, counting it
// against the set's total, parses it and hands it to fn.
// An error reading a zip entry is the archive's (corrupt data, a bad
// checksum): invalid input. An error reading a file is the machine's.
func (rd *reader) doc(name string, r io.Reader, inZip bool) error {
	b, err := io.ReadAll(io.LimitReader(r, MaxDocBytes+1))
	if err != nil {
		if inZip {
			return invalid("%s: %v", quote.Prefix(name), err)
		}
		return fmt.Errorf("read %s: %w", quote.Prefix(name), err)
	}
	if len(b) > MaxDocBytes {
		return invalid("%s is more than %d bytes", quote.Prefix(name), MaxDocBytes)
	}
	rd.total += int64(len(b))
	if rd.total > MaxTotalBytes {
		return invalid("the advisories are more than %d bytes in all", int64(MaxTotalBytes))
	}
	a, err := Parse(b)
	if err != nil {
		return fmt.Errorf("%s: %w", quote.Prefix(name), err)
	}
	if a.ID+".json" != name {
		return invalid("%s holds advisory %s: an OSV export names each file after its id", quote.Prefix(name), a.ID)
	}
	if rd.seen[a.ID] {
		return invalid("advisory %s appears twice", a.ID)
	}
	rd.seen[a.ID] = true
	return rd.fn(a)
}

// ReadDir is Read for a directory. Only regular files are read, through
// an os.Root, so a symbolic link cannot lead it outside dir.
func ReadDir(dir string, fn func(*Advisory) error) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("read advisories: %w", err)
	}
	defer root.Close()
	d, err := root.Open(".")
	if err != nil {
		return fmt.Errorf("read advisories: %w", err)
	}
	entries, err := d.ReadDir(maxAdvisories + 1)
	d.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read advisories: %w", err)
	}
	if len(entries) > maxAdvisories {
		return invalid("%s holds more than %d files", quote.Prefix(dir), maxAdvisories)
	}
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	rd := newReader(fn)
	for _, e := range entries {
		name := e.Name()
		if err := checkName(name); err != nil {
			return err
		}
		if !e.Type().IsRegular() {
			return invalid("%s is not a regular file", quote.Prefix(name))
		}
		f, err := root.Open(name)
		if err != nil {
			return fmt.Errorf("read advisories: %w", err)
		}
		err = rd.doc(name, f, false)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// ReadZip is Read for a zip archive of size bytes. Each entry's declared
// sizes are checked against MaxDocBytes and MaxRatio before it is
// decompressed, and what it decompresses to is bounded again while read
// (a declared size can lie).
func ReadZip(r io.ReaderAt, size int64, fn func(*Advisory) error) error {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return invalid("not a zip archive: %v", err)
	}
	if len(zr.File) > maxAdvisories {
		return invalid("the archive holds %d entries, more than %d", len(zr.File), maxAdvisories)
	}
	rd := newReader(fn)
	for _, f := range zr.File {
		if err := checkName(f.Name); err != nil {
			return err
		}
		if !f.Mode().IsRegular() {
			return invalid("%s is not a regular file", quote.Prefix(f.Name))
		}
		if f.UncompressedSize64 > MaxDocBytes {
			return invalid("%s is %d bytes, more than %d", quote.Prefix(f.Name), f.UncompressedSize64, MaxDocBytes)
		}
		if f.UncompressedSize64 > max(f.CompressedSize64, 1)*MaxRatio {
			return invalid("%s expands %d bytes to %d, more than %d times: refused as a zip bomb",
				quote.Prefix(f.Name), f.CompressedSize64, f.UncompressedSize64, MaxRatio)
		}
		rc, err := f.Open()
		if err != nil {
			return invalid("%s: %v", quote.Prefix(f.Name), err)
		}
		err = rd.doc(f.Name, rc, true)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// Entry names one advisory of a set by id and document digest.
type Entry struct {
	ID     string `json:"id"`
	Digest string `json:"digest"`
}

// SetDigest returns the digest of a set of advisories: the sha256 of
// "<id> <digest>\n" for each entry, in id order. It does not depend on the
// order of entries, nor on file names, compression or archive layout: the
// same documents give the same digest.
func SetDigest(entries []Entry) string {
	s := slices.Clone(entries)
	slices.SortFunc(s, func(a, b Entry) int { return strings.Compare(a.ID, b.ID) })
	h := sha256.New()
	var line bytes.Buffer
	for _, e := range s {
		line.Reset()
		line.WriteString(e.ID)
		line.WriteByte(' ')
		line.WriteString(e.Digest)
		line.WriteByte('\n')
		h.Write(line.Bytes())
	}
	return digest.FromSum(h.Sum(nil))
}
