package catalog

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/tlog"
)

const (
	maxNameLen     = 200
	maxVersionLen  = 128
	maxChannelLen  = 64
	maxRepoLen     = 1024
	maxCommitLen   = 256
	maxEnvelopeLen = 1 << 20
	// MaxDetailsLen bounds an event's details.
	MaxDetailsLen = 64 << 10
)

// ValidName reports whether s is a valid artifact name: 1 to 200 bytes of
// ASCII letters, digits and '.', '_', '-', '/', starting with a letter or
// digit, without empty path segments or "..".
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen || !alnum(s[0]) || strings.HasSuffix(s, "/") ||
		strings.Contains(s, "//") || strings.Contains(s, "..") {
		return false
	}
	return onlyChars(s, "._-/")
}

// ValidVersion reports whether s is a valid version: 1 to 128 bytes of
// ASCII letters, digits and '.', '_', '-', '+', starting with a letter or
// digit (SemVer, with pre-release and build metadata, fits).
func ValidVersion(s string) bool {
	return len(s) > 0 && len(s) <= maxVersionLen && alnum(s[0]) && onlyChars(s, "._-+")
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }

func onlyChars(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		if !alnum(s[i]) && !strings.ContainsRune(extra, rune(s[i])) {
			return false
		}
	}
	return true
}

// printable reports whether s is UTF-8 without control characters.
func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, unicode.IsControl)
}

func validateArtifact(a Artifact) error {
	var errs []string
	if !ValidName(a.Name) {
		errs = append(errs, fmt.Sprintf("name %q: want 1-%d letters, digits, '.', '_', '-' or '/', starting with a letter or digit", trunc(a.Name), maxNameLen))
	}
	if !ValidVersion(a.Version) {
		errs = append(errs, fmt.Sprintf("version %q: want 1-%d letters, digits, '.', '_', '-' or '+', starting with a letter or digit", trunc(a.Version), maxVersionLen))
	}
	if !tlog.ValidDigest(a.Digest) {
		errs = append(errs, fmt.Sprintf("digest %q: want sha256:<64 lowercase hex>", trunc(a.Digest)))
	}
	if a.Size < 0 {
		errs = append(errs, fmt.Sprintf("size %d: must not be negative", a.Size))
	}
	if a.Channel != "" && (len(a.Channel) > maxChannelLen || !alnum(a.Channel[0]) || !onlyChars(a.Channel, "._-")) {
		errs = append(errs, fmt.Sprintf("channel %q: want up to %d letters, digits, '.', '_' or '-'", trunc(a.Channel), maxChannelLen))
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

// payloadTypeInToto is the DSSE payload type of in-toto statements.
const payloadTypeInToto = "application/vnd.in-toto+json"

// validateEnvelope checks that b is a DSSE envelope in JSON (a payload type,
// a base64 payload, at least one signature) over an in-toto statement whose
// one subject is this artifact: its name and SHA-256 digest. It does not
// verify signatures: the catalog holds no signer keys; verifiers check them
// against the trust root.
//
// TODO: use attest.ParseEnvelope once libs/attest lands, and also check the
// provenance's builder.id against a.BuilderID.
func validateEnvelope(a Artifact, b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: envelope is missing: send the DSSE envelope the signer returned", ErrInvalid)
	}
	if len(b) > maxEnvelopeLen {
		return fmt.Errorf("%w: envelope is %d bytes, more than %d", ErrInvalid, len(b), maxEnvelopeLen)
	}
	var env struct {
		PayloadType string `json:"payloadType"`
		Payload     string `json:"payload"`
		Signatures  []struct {
			KeyID string `json:"keyid"`
			Sig   string `json:"sig"`
		} `json:"signatures"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&env); err != nil {
		return fmt.Errorf("%w: envelope is not DSSE JSON: %v", ErrInvalid, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: envelope: data after the JSON object", ErrInvalid)
	}
	var errs []string
	if env.PayloadType != payloadTypeInToto {
		errs = append(errs, fmt.Sprintf("payloadType %q: want %s", trunc(env.PayloadType), payloadTypeInToto))
	}
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil || len(payload) == 0 {
		errs = append(errs, "payload: want standard base64")
	}
	if len(env.Signatures) == 0 {
		errs = append(errs, "no signatures")
	}
	for i, s := range env.Signatures {
		if _, err := base64.StdEncoding.DecodeString(s.Sig); err != nil || s.Sig == "" {
			errs = append(errs, fmt.Sprintf("signature %d: want standard base64", i))
		}
	}
	if len(errs) == 0 {
		if err := checkSubject(a, payload); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: envelope: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// checkSubject checks that an in-toto statement is about artifact a only.
func checkSubject(a Artifact, payload []byte) error {
	var st struct {
		Subject []struct {
			Name   string            `json:"name"`
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
	}
	if err := json.Unmarshal(payload, &st); err != nil {
		return fmt.Errorf("payload is not an in-toto statement: %v", err)
	}
	want := strings.TrimPrefix(a.Digest, "sha256:")
	if len(st.Subject) != 1 || st.Subject[0].Name != a.Name || st.Subject[0].Digest["sha256"] != want {
		return fmt.Errorf("statement subject is not %s with sha256 %s: the envelope is for another artifact", a.Name, want)
	}
	return nil
}

func validateEvent(typ, subjectDigest string, details []byte) error {
	var errs []error
	if !tlog.ValidType(typ) {
		errs = append(errs, fmt.Errorf("type %q: want lowercase dot-separated words such as admission.decided", trunc(typ)))
	} else if typ == tlog.TypeArtifactPublished {
		errs = append(errs, fmt.Errorf("type %s is logged by RecordArtifact only", typ))
	}
	if subjectDigest != "" && !tlog.ValidDigest(subjectDigest) {
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

func trunc(s string) string {
	const n = 80
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
