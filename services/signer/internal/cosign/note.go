package cosign

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
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

// noteSigner is a note.Signer of C2SP cosignature/v1 signatures whose
// Ed25519 key stays in the key back end.
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

// newNoteSigner returns a cosignature/v1 signer named name for key version
// v of the back end, timestamping with now. The key hash is the standard
// one (over name, newline, the algorithm byte 0x04 and the public key),
// taken from the verifier key, so verifiers compute the same.
func newNoteSigner(ctx context.Context, b keys.Backend, name string, v keys.Version, now func() time.Time) (*noteSigner, error) {
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
	vkey, err := tlog.CosignatureVerifierKey(name, edPub)
	if err != nil {
		return nil, fmt.Errorf("checkpoint verifier key for %q: %w", name, err)
	}
	verifier, err := fnote.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		return nil, fmt.Errorf("checkpoint verifier key for %q: %w", name, err)
	}
	return &noteSigner{name: name, hash: verifier.KeyHash(), verifier: vkey, sign: func(msg []byte) ([]byte, error) {
		t := now().Unix()
		if t < 0 {
			return nil, fmt.Errorf("clock before 1970: %s", now())
		}
		sig, err := b.Sign(ctx, v.Name, v.Version, tlog.CosignatureMessage(uint64(t), msg))
		if err != nil {
			return nil, err
		}
		if len(sig) != ed25519.SignatureSize {
			return nil, fmt.Errorf("%s key %q version %d returned a %d-byte signature, want %d", b.Kind(), v.Name, v.Version, len(sig), ed25519.SignatureSize)
		}
		return append(binary.BigEndian.AppendUint64(make([]byte, 0, tlog.CosignatureSize), uint64(t)), sig...), nil
	}}, nil
}
