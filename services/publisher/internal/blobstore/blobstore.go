// Package blobstore is the publisher's object storage: the interface every
// back end (local filesystem, S3-compatible) implements, and the errors they
// return.
//
// A back end stores opaque named objects. It does not decide what the bytes
// mean, does not encrypt and does not check integrity: the encrypted store
// (package sealed) writes only ciphertext and wrapped keys through it and
// authenticates everything it reads back. A back end does decide durability:
// an object it reports written survives a crash, and an object appears whole
// or not at all.
//
// Object names are slash-separated paths of [a-z0-9._-] segments (see
// ValidName); back ends refuse anything else with ErrInvalid, so a name can
// never escape a directory or a bucket prefix.
package blobstore

import (
	"context"
	"errors"
	"io"
	"strings"
)

// Errors every back end returns (wrapped, with the object name). Callers
// branch with errors.Is.
var (
	// ErrNotFound: no object of that name. The caller reports the blob
	// as missing.
	ErrNotFound = errors.New("object not found")
	// ErrExists: Create found an object of that name already there and
	// left it untouched. The caller decides whether that is a duplicate.
	ErrExists = errors.New("object already exists")
	// ErrInvalid: a malformed object name or offset; a caller bug or a
	// hostile request, never retried.
	ErrInvalid = errors.New("invalid object name or offset")
	// ErrUnavailable: the storage service could not be reached or
	// refused for now. Nothing was written; the caller fails closed and
	// may retry later.
	ErrUnavailable = errors.New("object storage unavailable")
)

// Backend is object storage. Implementations are safe for concurrent use,
// also by several publisher processes sharing the same storage.
type Backend interface {
	// Write streams r into a new object name, which must not exist, and
	// returns the number of bytes written. The object becomes visible
	// only once complete and durable; on any error (including a read
	// error from r) nothing is visible under name. Names given to Write
	// are expected to be unique (random); a clash is ErrExists.
	Write(ctx context.Context, name string, r io.Reader) (int64, error)
	// Create stores a small object only if name is absent (put-if-absent,
	// atomic across processes); if present it returns ErrExists and
	// leaves the existing object as it was.
	Create(ctx context.Context, name string, data []byte) error
	// Replace atomically overwrites (or creates) a small object: a reader
	// sees the old or the new bytes, never a mix.
	Replace(ctx context.Context, name string, data []byte) error
	// Get returns a small object whole.
	Get(ctx context.Context, name string) ([]byte, error)
	// Open returns a reader of the object from offset to its end, and the
	// size of the whole object. An offset beyond the size is ErrInvalid.
	Open(ctx context.Context, name string, offset int64) (io.ReadCloser, int64, error)
	// Delete removes an object; deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error
	// List calls fn with the name of every object under prefix (a
	// directory-like prefix ending in "/"), in no particular order,
	// stopping at fn's first error.
	List(ctx context.Context, prefix string, fn func(name string) error) error
}

// Linker is a Backend that can take a complete file of the local
// filesystem as a new object without copying its bytes (a resumable upload
// sealed in place). Link makes the file at path durable and then visible as
// name, which must not exist (a clash is ErrExists, as for Write); the file
// stays at path as well. A back end that cannot do it for this path (another
// filesystem) returns an error wrapping errors.ErrUnsupported, and the
// caller writes the object with Write instead.
type Linker interface {
	Link(ctx context.Context, name, path string) error
}

// ValidName reports whether name is an acceptable object name: 1–512
// bytes, slash-separated segments of [a-z0-9._-], no empty, "." or ".."
// segment.
func ValidName(name string) bool {
	if name == "" || len(name) > 512 {
		return false
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				return false
			}
		}
	}
	return true
}

// ValidPrefix reports whether prefix is a ValidName followed by "/".
func ValidPrefix(prefix string) bool {
	p, ok := strings.CutSuffix(prefix, "/")
	return ok && ValidName(p)
}
