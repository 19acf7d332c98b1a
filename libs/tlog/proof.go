package tlog

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/custody-dev/custody/libs/quote"
)

// maxProofLen bounds proofs: no proof in a tree of at most 2^64 leaves is
// longer.
const maxProofLen = 128

var (
	// ErrMalformedProof means a proof cannot apply to the checkpoints given:
	// wrong number of hashes, a hash of the wrong size, or an index or size
	// out of range.
	ErrMalformedProof = errors.New("malformed proof")
	// ErrProofMismatch means a well-formed proof does not lead to the
	// checkpoint's root hash: the entry is not in that tree, or the log
	// forked.
	ErrProofMismatch = errors.New("proof does not match checkpoint")
)

// LeafHash returns the RFC 6962 hash of a leaf: SHA-256(0x00 || leaf).
func LeafHash(leaf []byte) []byte {
	h := sha256.New()
	h.Write([]byte{rfc6962.RFC6962LeafHashPrefix})
	h.Write(leaf)
	var out [sha256.Size]byte
	return h.Sum(out[:0])
}

// HashChildren is RFC 6962's interior node hash, SHA-256(0x01 || l || r),
// without rfc6962.Hasher's new hash state per call: a proof's verification
// and the catalog's proof builder hash many nodes per entry, and the
// allocations showed in the catalog's profile (decisions 0068, 0110).
func HashChildren(l, r []byte) []byte {
	if len(l) != sha256.Size || len(r) != sha256.Size {
		return rfc6962.DefaultHasher.HashChildren(l, r)
	}
	var buf [1 + 2*sha256.Size]byte
	buf[0] = rfc6962.RFC6962NodeHashPrefix
	copy(buf[1:], l)
	copy(buf[1+sha256.Size:], r)
	h := sha256.Sum256(buf[:])
	return h[:]
}

// Hasher is RFC 6962's SHA-256 hasher with HashChildren and LeafHash;
// TestHasherIsRFC6962 holds it to rfc6962.DefaultHasher.
var Hasher merkle.LogHasher = hasher{}

type hasher struct{}

func (hasher) EmptyRoot() []byte               { return rfc6962.DefaultHasher.EmptyRoot() }
func (hasher) HashLeaf(leaf []byte) []byte     { return LeafHash(leaf) }
func (hasher) HashChildren(l, r []byte) []byte { return HashChildren(l, r) }
func (hasher) Size() int                       { return sha256.Size }

// VerifyInclusion checks an RFC 6962 inclusion proof that leaf is entry
// index of the tree that cp commits to. Errors wrap ErrMalformedProof or
// ErrProofMismatch.
func VerifyInclusion(leaf []byte, index uint64, proofHashes [][]byte, cp *Checkpoint) error {
	if cp == nil {
		return fmt.Errorf("%w: no checkpoint", ErrMalformedProof)
	}
	if index >= cp.Size {
		return fmt.Errorf("%w: index %d is not below checkpoint size %d", ErrMalformedProof, index, cp.Size)
	}
	if err := checkHashes(proofHashes); err != nil {
		return err
	}
	err := proof.VerifyInclusion(Hasher, index, cp.Size, LeafHash(leaf), proofHashes, cp.Hash)
	if err != nil {
		return proofError(fmt.Sprintf("inclusion of entry %d in %s at size %d", index, cp.Origin, cp.Size), err)
	}
	return nil
}

// VerifyConsistency checks an RFC 6962 consistency proof that the tree of
// newer extends the tree of older. Both must be checkpoints of the same
// origin; equal sizes need an empty proof and equal roots. Errors wrap
// ErrOriginMismatch, ErrMalformedProof or ErrProofMismatch.
func VerifyConsistency(older, newer *Checkpoint, proofHashes [][]byte) error {
	if older == nil || newer == nil {
		return fmt.Errorf("%w: missing checkpoint", ErrMalformedProof)
	}
	if older.Origin != newer.Origin {
		return fmt.Errorf("%w: consistency between %q and %q", ErrOriginMismatch, quote.Prefix(older.Origin), quote.Prefix(newer.Origin))
	}
	what := fmt.Sprintf("consistency of %s from size %d to %d", older.Origin, older.Size, newer.Size)
	if newer.Size < older.Size {
		return fmt.Errorf("%w: %s: the newer checkpoint is smaller (log rolled back)", ErrProofMismatch, what)
	}
	if err := checkHashes(proofHashes); err != nil {
		return err
	}
	if older.Size == newer.Size {
		if len(proofHashes) != 0 {
			return fmt.Errorf("%w: %s: want an empty proof for equal sizes", ErrMalformedProof, what)
		}
		if !bytes.Equal(older.Hash, newer.Hash) {
			return fmt.Errorf("%w: %s: same size, different roots (log forked)", ErrProofMismatch, what)
		}
		return nil
	}
	err := proof.VerifyConsistency(Hasher, older.Size, newer.Size, proofHashes, older.Hash, newer.Hash)
	if err != nil {
		return proofError(what, err)
	}
	return nil
}

func checkHashes(hashes [][]byte) error {
	if len(hashes) > maxProofLen {
		return fmt.Errorf("%w: %d hashes, more than %d", ErrMalformedProof, len(hashes), maxProofLen)
	}
	for i, h := range hashes {
		if len(h) != sha256.Size {
			return fmt.Errorf("%w: hash %d is %d bytes, want %d", ErrMalformedProof, i, len(h), sha256.Size)
		}
	}
	return nil
}

func proofError(what string, err error) error {
	var mismatch proof.RootMismatchError
	if errors.As(err, &mismatch) {
		return fmt.Errorf("%w: %s: computed root %x, checkpoint has %x", ErrProofMismatch, what, mismatch.CalculatedRoot, mismatch.ExpectedRoot)
	}
	return fmt.Errorf("%w: %s: %v", ErrMalformedProof, what, err)
}
