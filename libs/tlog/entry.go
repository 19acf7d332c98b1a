// Package tlog defines Custody's transparency-log entries and verifies log
// checkpoints, inclusion proofs and consistency proofs.
package tlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/strictjson"
)

// MaxEntrySize bounds the encoding of an Entry, and so the leaves ParseEntry
// accepts. It is the largest entry a tlog-tiles log can hold (2^16-1 bytes).
const MaxEntrySize = 1<<16 - 1

// ErrMalformedEntry is returned (wrapped) by ParseEntry and Entry.Marshal for
// bytes or values that are not a valid entry.
var ErrMalformedEntry = errors.New("malformed log entry")

// Entry is one transparency-log entry; its JSON encoding is the leaf.
type Entry struct {
	// Type says what happened, e.g. TypeArtifactPublished or
	// "admission.decided": lowercase dot-separated words.
	Type string `json:"type"`
	// Time is when the logging service accepted the event.
	Time time.Time `json:"time"`
	// Actor is the authenticated SPIFFE ID of the caller that caused it.
	Actor string `json:"actor"`
	// Subject is the artifact the event is about; it may be empty.
	Subject Subject `json:"subject"`
	// EnvelopeSHA256 is the lowercase hex SHA-256 of the DSSE envelope bytes
	// that the event logs, if any.
	EnvelopeSHA256 string `json:"envelope_sha256,omitempty"`
	// Details is a JSON object with type-specific fields.
	Details json.RawMessage `json:"details,omitempty"`
}

// Subject names the artifact an entry is about.
type Subject struct {
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	// Digest is "sha256:<64 lowercase hex>".
	Digest string `json:"digest,omitempty"`
}

// Marshal returns the entry's leaf bytes: compact JSON, at most MaxEntrySize
// bytes, that ParseEntry accepts. Details are compacted, so two entries with
// the same content have the same leaf. It fails with ErrMalformedEntry if the
// entry would not parse back.
func (e Entry) Marshal() ([]byte, error) {
	if len(e.Details) > 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, e.Details); err != nil {
			return nil, fmt.Errorf("%w: details: %v", ErrMalformedEntry, err)
		}
		e.Details = buf.Bytes()
	}
	if err := e.validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedEntry, err)
	}
	// Whatever is logged must parse. The fields json.Marshal wrote from
	// validated values parse back by construction; what strict decoding
	// could still refuse is the size and, in the caller's details, repeated
	// keys, bytes that are not UTF-8 and deep nesting. Details are checked
	// at the depth they have in the leaf, without re-parsing the whole leaf
	// (which was about a fifth of the catalog's CPU per appended event).
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformedEntry, len(b), MaxEntrySize)
	}
	if len(e.Details) > 0 {
		wrapped := make([]byte, 0, len(e.Details)+len(detailsOpen)+1)
		wrapped = append(append(append(wrapped, detailsOpen...), e.Details...), '}')
		var d struct {
			Details json.RawMessage `json:"details"`
		}
		// Check, not Decode: a RawMessage takes any value, so the two
		// refuse the same bytes, and the decoded copy was thrown away.
		if err := strictjson.Check(wrapped, MaxEntrySize, &d); err != nil {
			return nil, fmt.Errorf("%w: details: %v", ErrMalformedEntry, err)
		}
	}
	return b, nil
}

// detailsOpen puts details at their depth in a leaf.
const detailsOpen = `{"details":`

// ParseEntry parses and validates a leaf. It is strict: the leaf must be at
// most MaxEntrySize bytes of one JSON object with only Entry's fields, each
// at most once, a valid type, time, actor and (if set) digest and envelope
// hash, and details that are a JSON object. Errors wrap ErrMalformedEntry.
func ParseEntry(leaf []byte) (*Entry, error) {
	var e Entry
	if err := strictjson.Decode(leaf, MaxEntrySize, &e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedEntry, err)
	}
	if err := e.validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

const (
	maxTypeLen  = 128
	maxActorLen = 2048
	maxNameLen  = 1024
)

func (e *Entry) validate() error {
	var errs []string
	if !ValidType(e.Type) {
		errs = append(errs, fmt.Sprintf("type %q: want lowercase dot-separated words like %q", quote.Prefix(e.Type), TypeArtifactPublished))
	}
	if e.Time.IsZero() {
		errs = append(errs, "time is missing")
	} else if y := e.Time.Year(); y < 1 || y > 9999 {
		errs = append(errs, "time out of range")
	}
	if !strings.HasPrefix(e.Actor, "spiffe://") || len(e.Actor) > maxActorLen {
		errs = append(errs, fmt.Sprintf("actor %q: want a SPIFFE ID", quote.Prefix(e.Actor)))
	}
	if len(e.Subject.Name) > maxNameLen || len(e.Subject.Version) > maxNameLen {
		errs = append(errs, "subject name or version too long")
	}
	if e.Subject.Digest != "" && !digest.Valid(e.Subject.Digest) {
		errs = append(errs, fmt.Sprintf("subject digest %q: want sha256:<64 lowercase hex>", quote.Prefix(e.Subject.Digest)))
	}
	if e.EnvelopeSHA256 != "" && !digest.ValidHex(e.EnvelopeSHA256) {
		errs = append(errs, fmt.Sprintf("envelope_sha256 %q: want 64 lowercase hex", quote.Prefix(e.EnvelopeSHA256)))
	}
	if len(e.Details) > 0 {
		trimmed := bytes.TrimLeft(e.Details, " \t\r\n")
		if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(e.Details) {
			errs = append(errs, "details: want a JSON object")
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrMalformedEntry, strings.Join(errs, "; "))
	}
	return nil
}

// ValidType reports whether t is a valid entry type: 1 to 128 bytes of
// lowercase dot-separated words of [a-z0-9_-], starting with a letter, such
// as "artifact.published" or "admission.decided".
func ValidType(t string) bool {
	if len(t) == 0 || len(t) > maxTypeLen {
		return false
	}
	for w := range strings.SplitSeq(t, ".") {
		if w == "" || w[0] < 'a' || w[0] > 'z' {
			return false
		}
		for i := 0; i < len(w); i++ {
			c := w[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				return false
			}
		}
	}
	return true
}
