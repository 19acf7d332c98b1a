package cosign

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/signer/internal/keys"
)

// body is a parsed checkpoint note whose signatures are not verified: the
// co-signer vouches for consistency, the catalog's signature is the
// catalog's business (it is authenticated by mTLS).
type body struct {
	note   *note.Note
	origin string
	size   uint64
	hash   []byte
}

var emptyRoot = sha256.Sum256(nil)

// parseNote parses a C2SP signed note holding a checkpoint, with the
// canonical-body rules of tlog.OpenCheckpoint and no extension lines,
// without verifying signatures.
func parseNote(b []byte) (*body, error) {
	if len(b) > tlog.MaxCheckpointSize {
		return nil, fmt.Errorf("%d bytes, more than %d", len(b), tlog.MaxCheckpointSize)
	}
	n, err := note.Open(b, note.VerifierList())
	if unverified, ok := errors.AsType[*note.UnverifiedNoteError](err); ok {
		n, err = unverified.Note, nil
	}
	if err != nil {
		return nil, fmt.Errorf("not a signed note: %v", err)
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		return nil, err
	}
	// Stricter than tlog.OpenCheckpoint: the signer vouches for every line
	// it signs, and the log writes no extension lines.
	if n.Text != string(cp.Marshal()) {
		return nil, errors.New("body is not canonical (origin, decimal size, base64 hash, and nothing else)")
	}
	if len(cp.Hash) != sha256.Size {
		return nil, fmt.Errorf("root hash is %d bytes, want %d", len(cp.Hash), sha256.Size)
	}
	if cp.Size == 0 && !bytes.Equal(cp.Hash, emptyRoot[:]) {
		return nil, errors.New("size 0 with a root hash other than the empty tree's")
	}
	return &body{note: n, origin: cp.Origin, size: cp.Size, hash: cp.Hash}, nil
}

// noteSigner is a note.Signer whose Ed25519 key stays in the key back end.
type noteSigner struct {
	name     string
	hash     uint32
	verifier string
	sign     func(msg []byte) ([]byte, error)
}

var _ note.Signer = (*noteSigner)(nil)

func (s *noteSigner) Name() string                    { return s.name }
func (s *noteSigner) KeyHash() uint32                 { return s.hash }
func (s *noteSigner) Sign(msg []byte) ([]byte, error) { return s.sign(msg) }

// newNoteSigner returns a note signer named name for key version v of the
// back end. The key hash is the standard one (over name, newline, the
// algorithm byte 0x01 and the public key), taken from the verifier key that
// note derives, so verifiers compute the same.
func newNoteSigner(ctx context.Context, b keys.Backend, name string, v keys.Version) (*noteSigner, error) {
	if v.Algorithm != keys.Ed25519 {
		return nil, fmt.Errorf("%s key %q version %d is %s: a checkpoint key must be Ed25519", b.Kind(), v.Name, v.Version, v.Algorithm)
	}
	pub, err := x509.ParsePKIXPublicKey(v.PublicDER)
	if err != nil {
		return nil, fmt.Errorf("%s key %q version %d: public key: %w", b.Kind(), v.Name, v.Version, err)
	}
	edPub, ok := pub.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s key %q version %d: public key is %T, want Ed25519", b.Kind(), v.Name, v.Version, pub)
	}
	vkey, err := note.NewEd25519VerifierKey(name, edPub)
	if err != nil {
		return nil, fmt.Errorf("checkpoint verifier key for %q: %w", name, err)
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("checkpoint verifier key for %q: %w", name, err)
	}
	return &noteSigner{name: name, hash: verifier.KeyHash(), verifier: vkey, sign: func(msg []byte) ([]byte, error) {
		return b.Sign(ctx, v.Name, v.Version, msg)
	}}, nil
}
