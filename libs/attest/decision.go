package attest

import (
	"errors"
	"fmt"
	"time"
)

// ErrNotAllowed means a decision record is not a valid, fresh allow by the
// expected gatekeeper: malformed, not signed by a trusted decision key, a
// deny, by another verifier, too old or dated in the future.
var ErrNotAllowed = errors.New("no allow decision")

// maxDecisionSkew is how far in the future a decision may be dated (clock
// skew between the gatekeeper and the verifier).
const maxDecisionSkew = time.Minute

// VerifyAllow is the one check of a gatekeeper decision record: env must be
// signed by one of keys (decision keys), carry a VSA that PASSED, made by
// verifier (the gatekeeper's SPIFFE ID), at most maxAge before now and not
// more than a minute after it. It returns what the decision says. Errors
// wrap ErrNotAllowed; a signature that does not verify also wraps the error
// of Envelope.Verify (ErrUnknownKey or ErrBadSignature), so that callers can
// count it. What the decision is about (digest, environment) is the
// caller's to compare, as is whether the key id that signed (returned) was
// valid: keys may include retired and revoked versions.
func VerifyAllow(env *Envelope, keys []Key, verifier string, now time.Time, maxAge time.Duration) (*Decision, string, error) {
	keyID, err := env.Verify(keys, PurposeDecision)
	if err != nil {
		return nil, "", fmt.Errorf("%w: decision record: %w", ErrNotAllowed, err)
	}
	d, err := allowed(env, verifier, now, maxAge)
	return d, keyID, err
}

func allowed(env *Envelope, verifier string, now time.Time, maxAge time.Duration) (*Decision, error) {
	st, err := ParseStatement(env.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotAllowed, err)
	}
	d, err := st.Decision()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotAllowed, err)
	}
	switch {
	case !d.Passed:
		return nil, fmt.Errorf("%w: the decision for %s is a deny", ErrNotAllowed, d.Digest)
	case d.VerifierID != verifier:
		return nil, fmt.Errorf("%w: the decision for %s was made by %s, not %s", ErrNotAllowed, d.Digest, d.VerifierID, verifier)
	case now.Sub(d.Time) > maxAge:
		return nil, fmt.Errorf("%w: the decision for %s is older than %s: admit again", ErrNotAllowed, d.Digest, maxAge)
	case d.Time.Sub(now) > maxDecisionSkew:
		return nil, fmt.Errorf("%w: the decision for %s is dated in the future", ErrNotAllowed, d.Digest)
	}
	return d, nil
}
