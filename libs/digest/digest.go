// Package digest parses Custody's artifact digests, "sha256:<64 lowercase
// hex>", the one form every API, record and URL uses.
package digest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/custody-dev/custody/libs/quote"
)

// Prefix starts every digest.
const Prefix = "sha256:"

// hexLen is the length of the hex part.
const hexLen = 2 * sha256.Size

// ErrInvalid is wrapped by every error of Parse: the caller's input is not a
// digest, and no other spelling (upper case, another algorithm, padding) is
// accepted.
var ErrInvalid = errors.New("invalid digest")

// Parse checks that d is "sha256:" followed by exactly 64 lowercase hex
// digits and returns the hex part. Its error wraps ErrInvalid and quotes at
// most a short prefix of d.
func Parse(d string) (string, error) {
	h, ok := strings.CutPrefix(d, Prefix)
	if !ok || !ValidHex(h) {
		return "", fmt.Errorf("%w %q: want sha256:<64 lowercase hex>", ErrInvalid, quote.Prefix(d))
	}
	return h, nil
}

// Valid reports whether Parse accepts d.
func Valid(d string) bool {
	_, err := Parse(d)
	return err == nil
}

// ValidHex reports whether h is a SHA-256 sum in the form Custody writes it:
// exactly 64 lowercase hex digits.
func ValidHex(h string) bool {
	if len(h) != hexLen {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// FromSum returns the digest of a SHA-256 sum.
func FromSum(sum []byte) string {
	return Prefix + hex.EncodeToString(sum)
}

// Of returns the digest of b.
func Of(b []byte) string {
	sum := sha256.Sum256(b)
	return FromSum(sum[:])
}
