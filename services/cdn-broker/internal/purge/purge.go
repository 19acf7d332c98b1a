// Package purge asks commercial CDNs to drop cached copies of a digest's
// path, through each vendor's own API client, so that a revoked artifact
// stops being served from CDN caches before its URLs expire.
//
// One back end per subpackage (cloudfront, cloudcdn), so the broker links
// only the vendor clients it uses. It does not decide what to purge: the broker calls it for revoked
// digests. A purge is idempotent per reference (the revocation's ID):
// retrying with the same reference does not start a second purge where the
// vendor supports it.
package purge

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/custody-dev/custody/libs/digest"
)

// ErrInvalid is wrapped by errors caused by the caller's input.
var ErrInvalid = errors.New("purge: invalid input")

var refRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// BlobPath returns the edge path of a digest, /v1/blobs/sha256/<hex>,
// under base (a path prefix, "" or "/cdn").
func BlobPath(base, d, ref string) (string, error) {
	h, err := digest.Parse(d)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if !refRE.MatchString(ref) {
		return "", fmt.Errorf("%w: reference %q: want 1 to 64 of A-Z a-z 0-9 . _ : -", ErrInvalid, ref)
	}
	return base + "/v1/blobs/sha256/" + h, nil
}
