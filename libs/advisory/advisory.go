// Package advisory reads OSV advisories and matches them against SBOM
// components (libs/sbom) by package URL and affected version ranges.
package advisory

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	osv "github.com/ossf/osv-schema/bindings/go/osvschema"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/quote"
)

// Bounds on one advisory document and on a set of them (decision 0080).
// Every bound is checked before the bytes it covers are decoded or kept.
const (
	// MaxDocBytes bounds one advisory document. The largest entries of
	// OSV's exports (kernel and distribution entries that list every
	// affected version) are a few hundred KiB; at 2 MiB a document fits in
	// one gRPC message under the servers' 4 MiB limit.
	MaxDocBytes = 2 << 20
	// MaxAdvisories bounds the advisories of one set (a directory or a
	// zip). OSV's largest per-ecosystem export holds well under this.
	MaxAdvisories = 200000
	// MaxTotalBytes bounds the uncompressed bytes of one set.
	MaxTotalBytes = 1 << 30
	// MaxRatio bounds how much larger than its compressed size one zip
	// entry may be: JSON compresses about 5 to 20 times; a bomb far more.
	MaxRatio = 100
	// MaxDepth bounds how deeply a document's messages nest (protojson's
	// recursion limit; free-form database_specific objects count two
	// levels per JSON object).
	MaxDepth = 64
	// MaxIDLen bounds an advisory id, which names a file and a row.
	MaxIDLen = 128
	// MaxVersionLen bounds a version string that is compared.
	MaxVersionLen = 256
)

// ErrInvalid is matched (errors.Is) by every error about the input: a
// malformed or oversized document, a set over a bound, a file that is not
// `<id>.json`, a duplicate id. Such errors carry gRPC InvalidArgument.
var ErrInvalid = errors.New("invalid advisory")

type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return "invalid advisory: " + e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }
func (e *invalidError) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.Error())
}

// maxErrLen bounds the text a decoder's error may add to ours: it can
// quote the document.
const maxErrLen = 200

func invalid(format string, args ...any) error {
	return &invalidError{msg: quote.Clip(fmt.Sprintf(format, args...), maxErrLen)}
}

// idPattern is the OSV id syntax: a database prefix, a dash, an id within
// it (GHSA-jfh8-c2jp-5v3q, GO-2021-0113, PYSEC-2021-66, DSA-5020-1).
var idPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]*-[A-Za-z0-9][A-Za-z0-9._:-]*$`)

// ValidID reports whether id is an OSV id Custody accepts.
func ValidID(id string) bool { return len(id) <= MaxIDLen && idPattern.MatchString(id) }

// Advisory is one parsed OSV document. Values are read-only once returned.
type Advisory struct {
	// ID is the OSV id.
	ID string
	// Modified is the document's modified time.
	Modified time.Time
	// Withdrawn is set when the advisory was withdrawn: it matches nothing.
	Withdrawn bool
	// Severity is the advisory's severity (Severity function).
	Severity Severity
	// Raw are the document's bytes as read: what is stored and digested.
	Raw []byte
	// Digest is the sha256 digest of Raw.
	Digest string
	// OSV is the decoded document.
	OSV *osv.Vulnerability
}

var unmarshal = protojson.UnmarshalOptions{
	// OSV's schema gains fields; a document newer than the bindings is
	// still read for the fields they know.
	DiscardUnknown: true,
	RecursionLimit: MaxDepth,
}

// Parse decodes one OSV JSON document with the OSV schema's Go bindings.
// It requires an id (ValidID) and a modified time, and checks that every
// version it will compare is at most MaxVersionLen bytes. Errors match
// ErrInvalid. Parse does not keep b; Raw is a copy.
func Parse(b []byte) (*Advisory, error) {
	if len(b) > MaxDocBytes {
		return nil, invalid("document of %d bytes, more than %d", len(b), MaxDocBytes)
	}
	v := &osv.Vulnerability{}
	if err := decode(b, v); err != nil {
		return nil, err
	}
	if !ValidID(v.GetId()) {
		return nil, invalid("id %q is not an OSV id", quote.Prefix(v.GetId()))
	}
	if v.GetModified() == nil {
		return nil, invalid("%s has no modified time", v.GetId())
	}
	for _, a := range v.GetAffected() {
		for _, r := range a.GetRanges() {
			for _, e := range r.GetEvents() {
				for _, s := range []string{e.GetIntroduced(), e.GetFixed(), e.GetLastAffected(), e.GetLimit()} {
					if len(s) > MaxVersionLen {
						return nil, invalid("%s: a range event's version is longer than %d bytes", v.GetId(), MaxVersionLen)
					}
				}
			}
		}
		for _, s := range a.GetVersions() {
			if len(s) > MaxVersionLen {
				return nil, invalid("%s: a listed version is longer than %d bytes", v.GetId(), MaxVersionLen)
			}
		}
	}
	raw := append([]byte(nil), b...)
	return &Advisory{
		ID:        v.GetId(),
		Modified:  v.GetModified().AsTime(),
		Withdrawn: v.GetWithdrawn() != nil,
		Severity:  severityOf(v),
		Raw:       raw,
		Digest:    digest.Of(raw),
		OSV:       v,
	}, nil
}

// decode runs protojson, turning a panic inside it into an error: the
// bytes are untrusted and the decoder is not ours.
func decode(b []byte, v *osv.Vulnerability) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = invalid("decoder failed: %v", r)
		}
	}()
	if err := unmarshal.Unmarshal(b, v); err != nil {
		return invalid("not an OSV document: %v", err)
	}
	return nil
}
