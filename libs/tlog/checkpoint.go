package tlog

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/custody-dev/custody/libs/quote"
)

// MaxCheckpointSize bounds the signed notes OpenCheckpoint accepts.
const MaxCheckpointSize = 64 << 10

var (
	// ErrBadKey means a note verifier key could not be parsed.
	ErrBadKey = errors.New("bad log verifier key")
	// ErrMalformedCheckpoint means the bytes are not a signed note holding a
	// checkpoint.
	ErrMalformedCheckpoint = errors.New("malformed checkpoint")
	// ErrUnknownKey means the checkpoint carries no signature by the log's
	// key: it was signed by another key, or by none.
	ErrUnknownKey = errors.New("checkpoint not signed by the log's key")
	// ErrBadSignature means the log's key signed the checkpoint but the
	// signature does not verify: the note was altered or forged.
	ErrBadSignature = errors.New("bad checkpoint signature")
	// ErrOriginMismatch means a checkpoint's origin is not the expected log.
	ErrOriginMismatch = errors.New("checkpoint origin mismatch")
)

// Checkpoint is a verified checkpoint of a log: its origin, size and RFC
// 6962 root hash.
type Checkpoint struct {
	Origin string
	Size   uint64
	Hash   []byte
	// CosignedAt is the time in the cosignature/v1 that OpenCosigned
	// verified; zero for a checkpoint verified by the log's own signature.
	CosignedAt time.Time
}

// OpenCheckpoint verifies a C2SP signed note with the log's note verifier and
// parses the checkpoint it holds. verifierKey is the note verifier key text
// ("<name>+<hash>+<base64>"); the checkpoint's origin must equal the key's
// name. Other signatures (e.g. witness cosignatures) are ignored. The
// checkpoint body must be canonical: origin, size in decimal without leading
// zeros and a 32-byte root hash in standard base64, one per line; extension
// lines after them are allowed and ignored. Errors wrap ErrBadKey,
// ErrMalformedCheckpoint, ErrUnknownKey, ErrBadSignature or ErrOriginMismatch.
func OpenCheckpoint(signed []byte, verifierKey string) (*Checkpoint, error) {
	v, err := note.NewVerifier(verifierKey)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrBadKey, quote.Prefix(verifierKey), err)
	}
	n, err := openNote(signed, v)
	if err != nil {
		return nil, err
	}
	return parseBody(n.Text, v.Name())
}

// parseBody parses the canonical checkpoint body of a verified note and
// checks that its origin is origin.
func parseBody(text, origin string) (*Checkpoint, error) {
	var cp log.Checkpoint
	if _, err := cp.Unmarshal([]byte(text)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedCheckpoint, err)
	}
	if !bytes.HasPrefix([]byte(text), cp.Marshal()) {
		return nil, fmt.Errorf("%w: body is not canonical (origin, decimal size, base64 hash)", ErrMalformedCheckpoint)
	}
	if len(cp.Hash) != sha256.Size {
		return nil, fmt.Errorf("%w: root hash is %d bytes, want %d", ErrMalformedCheckpoint, len(cp.Hash), sha256.Size)
	}
	if cp.Size == 0 && !bytes.Equal(cp.Hash, emptyRoot[:]) {
		return nil, fmt.Errorf("%w: size 0 with a root hash other than the empty tree's", ErrMalformedCheckpoint)
	}
	if cp.Origin != origin {
		return nil, fmt.Errorf("%w: checkpoint is for %q, key is for %q", ErrOriginMismatch, quote.Prefix(cp.Origin), quote.Prefix(origin))
	}
	return &Checkpoint{Origin: cp.Origin, Size: cp.Size, Hash: cp.Hash}, nil
}

// openNote verifies signed with v, mapping note's errors to this package's.
func openNote(signed []byte, v note.Verifier) (*note.Note, error) {
	if len(signed) > MaxCheckpointSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformedCheckpoint, len(signed), MaxCheckpointSize)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &unverified):
			return nil, fmt.Errorf("%w %s+%08x (signed by %s)", ErrUnknownKey, quote.Prefix(v.Name()), v.KeyHash(), signers(unverified.Note))
		case errors.As(err, &invalid):
			return nil, fmt.Errorf("%w by key %s+%08x", ErrBadSignature, quote.Prefix(invalid.Name), invalid.Hash)
		default:
			return nil, fmt.Errorf("%w: %v", ErrMalformedCheckpoint, err)
		}
	}
	return n, nil
}

var emptyRoot = sha256.Sum256(nil)

func signers(n *note.Note) string {
	if n == nil || len(n.UnverifiedSigs) == 0 {
		return "no key"
	}
	var b bytes.Buffer
	for i, s := range n.UnverifiedSigs {
		if i == 3 {
			fmt.Fprintf(&b, " and %d more", len(n.UnverifiedSigs)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s+%08x", quote.Prefix(s.Name), s.Hash)
	}
	return b.String()
}

// GenerateKey returns a new Ed25519 note key pair for a log named origin:
// the signer key (secret, for the log) and the verifier key (public, for
// clients), both in golang.org/x/mod/sumdb/note text form. origin must be a
// valid note name: non-empty, without spaces or '+'.
func GenerateKey(origin string) (signerKey, verifierKey string, err error) {
	// note.GenerateKey does not check the name, but NewSigner and NewVerifier
	// refuse keys with a bad one.
	if origin == "" || !utf8.ValidString(origin) || strings.ContainsFunc(origin, unicode.IsSpace) || strings.Contains(origin, "+") {
		return "", "", fmt.Errorf("generate log key: origin %q: want a non-empty name without spaces or '+', e.g. custody.example/log", origin)
	}
	signerKey, verifierKey, err = note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return "", "", fmt.Errorf("generate log key for origin %q: %w", origin, err)
	}
	return signerKey, verifierKey, nil
}

// SignCheckpoint returns cp as a C2SP signed note signed with signerKey (a
// note signer key such as GenerateKey returns).
func SignCheckpoint(cp Checkpoint, signerKey string) ([]byte, error) {
	s, err := note.NewSigner(signerKey)
	if err != nil {
		return nil, fmt.Errorf("%w: signer key: %v", ErrBadKey, err)
	}
	return SignCheckpointWith(cp, s)
}

// SignCheckpointWith returns cp as a C2SP signed note signed with s, the
// note Tessera writes for a checkpoint of the same tree.
func SignCheckpointWith(cp Checkpoint, s note.Signer) ([]byte, error) {
	text := log.Checkpoint{Origin: cp.Origin, Size: cp.Size, Hash: cp.Hash}.Marshal()
	b, err := note.Sign(&note.Note{Text: string(text)}, s)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint of %q at size %d: %w", cp.Origin, cp.Size, err)
	}
	return b, nil
}
