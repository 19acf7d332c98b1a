package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/artifact"
	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/tlog"
)

const (
	maxRepoLen     = 1024
	maxCommitLen   = 256
	maxEnvelopeLen = 1 << 20
	// MaxDetailsLen bounds an event's details.
	MaxDetailsLen = 64 << 10
)

// ValidName and ValidVersion are the shared artifact rules.
var (
	ValidName    = artifact.ValidName
	ValidVersion = artifact.ValidVersion
)

// printable reports whether s is UTF-8 without control characters.
func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, unicode.IsControl)
}

func validateArtifact(a Artifact) error {
	var errs []string
	if !ValidName(a.Name) {
		errs = append(errs, fmt.Sprintf("name %q: want 1-%d letters, digits, '.', '_', '-' or '/', starting with a letter or digit", trunc(a.Name), artifact.MaxNameLen))
	}
	if !ValidVersion(a.Version) {
		errs = append(errs, fmt.Sprintf("version %q: want 1-%d letters, digits, '.', '_', '-' or '+', starting with a letter or digit", trunc(a.Version), artifact.MaxVersionLen))
	}
	if !digest.Valid(a.Digest) {
		errs = append(errs, fmt.Sprintf("digest %q: want sha256:<64 lowercase hex>", trunc(a.Digest)))
	}
	if a.Size < 0 {
		errs = append(errs, fmt.Sprintf("size %d: must not be negative", a.Size))
	}
	if a.Channel != "" && !artifact.ValidChannel(a.Channel) {
		errs = append(errs, fmt.Sprintf("channel %q: want up to %d letters, digits, '.', '_' or '-'", trunc(a.Channel), artifact.MaxChannelLen))
	}
	if id, err := spiffeid.FromString(a.BuilderID); err != nil {
		errs = append(errs, fmt.Sprintf("builder_id %q: want the builder's SPIFFE ID: %v", trunc(a.BuilderID), err))
	} else if id.String() != a.BuilderID {
		errs = append(errs, fmt.Sprintf("builder_id %q: not in canonical form", trunc(a.BuilderID)))
	}
	if len(a.SourceRepo) > maxRepoLen || !printable(a.SourceRepo) {
		errs = append(errs, fmt.Sprintf("source_repo: want up to %d printable characters", maxRepoLen))
	}
	if len(a.SourceCommit) > maxCommitLen || !printable(a.SourceCommit) || strings.ContainsFunc(a.SourceCommit, unicode.IsSpace) {
		errs = append(errs, fmt.Sprintf("source_commit: want up to %d printable characters without spaces", maxCommitLen))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// EnvelopeKeyID returns the key id of a DSSE envelope's signature: the
// keyid of its first one (Custody's signer signs with one key). It fails if
// b is not an envelope.
func EnvelopeKeyID(b []byte) (string, error) {
	env, err := attest.ParseEnvelope(b)
	if err != nil {
		return "", err
	}
	return env.Signatures[0].KeyID, nil
}

// parseEnvelope parses an envelope of an in-toto statement sent by a client.
func parseEnvelope(b []byte) (*attest.Envelope, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: envelope is missing: send the DSSE envelope the signer returned", ErrInvalid)
	}
	if len(b) > maxEnvelopeLen {
		return nil, fmt.Errorf("%w: envelope is %d bytes, more than %d", ErrInvalid, len(b), maxEnvelopeLen)
	}
	env, err := attest.ParseEnvelope(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if env.PayloadType != attest.PayloadType {
		return nil, fmt.Errorf("%w: envelope payloadType %q: want %s", ErrInvalid, trunc(env.PayloadType), attest.PayloadType)
	}
	return env, nil
}

// validateEnvelope checks that b is a DSSE envelope over an in-toto
// provenance statement about this artifact exactly: its name, version,
// channel, digest and builder, and returns the key id of its signature. It
// does not verify signatures: the catalog holds no signer keys; verifiers
// check them against the trust root.
func validateEnvelope(a Artifact, b []byte) (keyID string, err error) {
	env, err := parseEnvelope(b)
	if err != nil {
		return "", err
	}
	st, err := attest.ParseStatement(env.Payload)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	got, err := st.Artifact()
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var errs []string
	for _, f := range []struct{ what, got, want string }{
		{"name", got.Name, a.Name}, {"version", got.Version, a.Version}, {"channel", got.Channel, a.Channel},
		{"digest", got.Digest, a.Digest}, {"builder.id", got.BuilderID, a.BuilderID},
	} {
		if f.got != f.want {
			errs = append(errs, fmt.Sprintf("statement %s %q differs from the record's %q", f.what, trunc(f.got), trunc(f.want)))
		}
	}
	if len(errs) > 0 {
		return "", fmt.Errorf("%w: the envelope is for another artifact: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return env.Signatures[0].KeyID, nil
}

func validateEvent(typ, subjectDigest string, details []byte) error {
	var errs []error
	if !tlog.ValidType(typ) {
		errs = append(errs, fmt.Errorf("type %q: want lowercase dot-separated words such as admission.decided", trunc(typ)))
	} else if typ == tlog.TypeArtifactPublished {
		errs = append(errs, fmt.Errorf("type %s is logged by RecordArtifact only", typ))
	} else if typ == tlog.TypeArtifactResigned {
		errs = append(errs, fmt.Errorf("type %s is logged by RecordSignature only", typ))
	}
	if subjectDigest != "" && !digest.Valid(subjectDigest) {
		errs = append(errs, fmt.Errorf("subject_digest %q: want sha256:<64 lowercase hex>", trunc(subjectDigest)))
	}
	if len(details) > MaxDetailsLen {
		errs = append(errs, fmt.Errorf("details: %d bytes, more than %d", len(details), MaxDetailsLen))
	} else if len(details) > 0 {
		trimmed := bytes.TrimLeft(details, " \t\r\n")
		if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(details) {
			errs = append(errs, errors.New("details: want a JSON object"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return nil
}

// trunc is quote.Prefix under the name this package's messages use.
func trunc(s string) string { return quote.Prefix(s) }
