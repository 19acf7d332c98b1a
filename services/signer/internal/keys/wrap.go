package keys

import "errors"

// Data-key wrapping: a back end that holds key-encryption keys (KEKs,
// secret keys with numbered versions that never leave it) wraps and unwraps
// the publisher's data keys. Today only keys/pkcs11 does (decision 0059).

// ErrBadWrappedKey: a wrapped data key that does not open under the KEK
// version it names (tampered, truncated, or wrapped by another KEK). The
// data it protects cannot be read; callers report an integrity failure
// and do not retry.
var ErrBadWrappedKey = errors.New("wrapped data key does not open")

// Data-key sizes a wrapping back end accepts: AES-128 to a 512-bit key.
const (
	MinDataKey = 16
	MaxDataKey = 64
)
