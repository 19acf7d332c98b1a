package tlog

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/custody-dev/custody/libs/quote"
)

// Note key algorithms (C2SP signed-note and tlog-cosignature).
const (
	algEd25519       = 0x01
	algCosignatureV1 = 0x04
)

// CosignatureSize is the length of a cosignature/v1 Ed25519 signature: an
// 8-byte big-endian Unix timestamp followed by the 64-byte signature.
const CosignatureSize = 8 + ed25519.SignatureSize

// CosignatureMessage returns the bytes a C2SP cosignature/v1 Ed25519
// signature made at Unix time t covers for a checkpoint note body:
// "cosignature/v1\ntime <t>\n" followed by the body.
func CosignatureMessage(t uint64, body []byte) []byte {
	return append([]byte("cosignature/v1\ntime "+strconv.FormatUint(t, 10)+"\n"), body...)
}

// CosignatureVerifierKey returns the note verifier key text of
// cosignature/v1 signatures by pub under name: "<name>+<hash>+<base64(0x04
// || pub)>", the form witnesses and their verifiers use. name must be a
// valid note name.
func CosignatureVerifierKey(name string, pub ed25519.PublicKey) (string, error) {
	if !validName(name) {
		return "", fmt.Errorf("%w: cosigner name %q: want a non-empty name without spaces or '+'", ErrBadKey, quote.Prefix(name))
	}
	if len(pub) != ed25519.PublicKeySize {
		return "", fmt.Errorf("%w: Ed25519 public key is %d bytes", ErrBadKey, len(pub))
	}
	key := append([]byte{algCosignatureV1}, pub...)
	return fmt.Sprintf("%s+%08x+%s", name, keyHash(name, key), base64.StdEncoding.EncodeToString(key)), nil
}

// GenerateCosignerKey returns a new cosignature/v1 key pair named name: a
// signer key for CosignCheckpoint (tests and tools; the signer's key lives
// in its key back end) and its verifier key.
func GenerateCosignerKey(name string) (signerKey, verifierKey string, err error) {
	skey, vkey, err := GenerateKey(name)
	if err != nil {
		return "", "", err
	}
	vkey, err = fnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		return "", "", fmt.Errorf("generate cosigner key: %w", err)
	}
	return skey, vkey, nil
}

// CosignCheckpoint adds a cosignature/v1 by signerKey (from
// GenerateCosignerKey), timestamped now, to the checkpoint note signed. It
// is for tests and tools: it does not verify the note's other signatures.
func CosignCheckpoint(signed []byte, signerKey string) ([]byte, error) {
	s, err := fnote.NewSignerForCosignatureV1(signerKey)
	if err != nil {
		return nil, fmt.Errorf("%w: cosigner key: %v", ErrBadKey, err)
	}
	n, err := note.Open(signed, note.VerifierList())
	if unverified, ok := errors.AsType[*note.UnverifiedNoteError](err); ok {
		n, err = unverified.Note, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedCheckpoint, err)
	}
	out, err := note.Sign(n, s)
	if err != nil {
		return nil, fmt.Errorf("cosign checkpoint: %w", err)
	}
	return out, nil
}

// OpenCosigned verifies a checkpoint of the log origin with verifierKey, the
// key a trust root lists for that log, and parses it like OpenCheckpoint.
// verifierKey is either a C2SP cosignature/v1 Ed25519 key, whose name must
// differ from origin (a witness, such as the signer), or an Ed25519 note key
// named origin (the log's own key, or a co-signer from before
// cosignature/v1). For a cosignature, the checkpoint's CosignedAt is the
// signature's timestamp. Errors wrap the same sentinels as OpenCheckpoint.
func OpenCosigned(signed []byte, origin, verifierKey string) (*Checkpoint, error) {
	name, alg, err := parseVerifierKey(verifierKey)
	if err != nil {
		return nil, err
	}
	switch {
	case alg == algEd25519 && name != origin:
		return nil, fmt.Errorf("%w: Ed25519 key %q is not the key of log %q", ErrOriginMismatch, quote.Prefix(name), quote.Prefix(origin))
	case alg == algEd25519:
		return OpenCheckpoint(signed, verifierKey)
	case name == origin:
		return nil, fmt.Errorf("%w: cosignature key named like the log %q: a cosigner's name must differ from the log's origin", ErrBadKey, quote.Prefix(origin))
	}
	v, err := fnote.NewVerifierForCosignatureV1(verifierKey)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrBadKey, quote.Prefix(verifierKey), err)
	}
	n, err := openNote(signed, v)
	if err != nil {
		return nil, err
	}
	cp, err := parseBody(n.Text, origin)
	if err != nil {
		return nil, err
	}
	for _, s := range n.Sigs {
		if s.Name == v.Name() && s.Hash == v.KeyHash() {
			at, err := fnote.CoSigV1Timestamp(s)
			if err != nil {
				return nil, fmt.Errorf("%w: cosignature timestamp: %v", ErrMalformedCheckpoint, err)
			}
			cp.CosignedAt = at.UTC()
		}
	}
	return cp, nil
}

// CheckVerifierKey says whether verifierKey is a key OpenCosigned takes for
// checkpoints of origin: an Ed25519 note key or a cosignature/v1 key not
// named origin. (An Ed25519 key named otherwise is well-formed but verifies
// nothing: OpenCosigned refuses it with ErrOriginMismatch.) Errors wrap
// ErrBadKey.
func CheckVerifierKey(origin, verifierKey string) error {
	name, alg, err := parseVerifierKey(verifierKey)
	if err != nil {
		return err
	}
	if alg == algCosignatureV1 && name == origin {
		return fmt.Errorf("%w: cosignature key named like the log %q: a cosigner's name must differ from the log's origin", ErrBadKey, quote.Prefix(origin))
	}
	return nil
}

// parseVerifierKey parses "<name>+<hash>+<base64(alg || Ed25519 key)>" for
// the two algorithms Custody verifies, checking the key hash (which
// transparency-dev/formats does not).
func parseVerifierKey(vkey string) (name string, alg byte, err error) {
	name, rest, _ := strings.Cut(vkey, "+")
	hash16, key64, _ := strings.Cut(rest, "+")
	key, derr := base64.StdEncoding.DecodeString(key64)
	hash, herr := strconv.ParseUint(hash16, 16, 32)
	if !validName(name) || len(hash16) != 8 || herr != nil || derr != nil || len(key) != 1+ed25519.PublicKeySize {
		return "", 0, fmt.Errorf("%w %q: want <name>+<8 hex digits>+<base64 Ed25519 key>", ErrBadKey, quote.Prefix(vkey))
	}
	if key[0] != algEd25519 && key[0] != algCosignatureV1 {
		return "", 0, fmt.Errorf("%w %q: algorithm %#02x, want Ed25519 (0x01) or cosignature/v1 Ed25519 (0x04)", ErrBadKey, quote.Prefix(vkey), key[0])
	}
	if uint32(hash) != keyHash(name, key) {
		return "", 0, fmt.Errorf("%w %q: the key hash does not match the key", ErrBadKey, quote.Prefix(vkey))
	}
	return name, key[0], nil
}

// keyHash is the signed-note key hash: the first 4 bytes of SHA-256(name ||
// "\n" || alg || key).
func keyHash(name string, key []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte("\n"))
	h.Write(key)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

func validName(name string) bool {
	return name != "" && utf8.ValidString(name) && !strings.ContainsFunc(name, unicode.IsSpace) && !strings.Contains(name, "+")
}
