package tlog

import (
	"errors"
	"fmt"
	"time"
)

// ErrStale means a checkpoint is older than the verifier accepts: its
// cosignature/v1 timestamp is more than the maximum age before now, lies in
// the future beyond the allowed skew, or is missing. A log that stopped
// being co-signed (frozen) or a mirror serving an old view looks like this.
var ErrStale = errors.New("checkpoint too old")

// MaxFutureSkew is how far in the future a cosignature timestamp may lie
// (clock skew between co-signer and verifier) before CheckFresh refuses it.
const MaxFutureSkew = 2 * time.Minute

// CheckFresh returns nil if cp, as OpenCosigned returned it, was co-signed
// at most maxAge before now; with maxAge zero or negative it checks nothing
// (offline verification of an old bundle). Otherwise the error wraps
// ErrStale and says how old the checkpoint is: a checkpoint verified by the
// log's own key carries no cosignature time and is refused. It is the one
// freshness check of every online verifier (gatekeeper, custody).
func CheckFresh(cp *Checkpoint, now time.Time, maxAge time.Duration) error {
	if maxAge <= 0 {
		return nil
	}
	if cp.CosignedAt.IsZero() {
		return fmt.Errorf("%w: checkpoint of %s at size %d carries no cosignature/v1 timestamp; a co-signed one no older than %s is required",
			ErrStale, cp.Origin, cp.Size, maxAge)
	}
	age := now.Sub(cp.CosignedAt)
	switch {
	case age > maxAge:
		return fmt.Errorf("%w: checkpoint of %s at size %d was co-signed at %s, %s ago, more than the maximum age %s: the log may be frozen or this view withheld; check that the catalog and the signer are up",
			ErrStale, cp.Origin, cp.Size, cp.CosignedAt.Format(time.RFC3339), age.Round(time.Second), maxAge)
	case age < -MaxFutureSkew:
		return fmt.Errorf("%w: checkpoint of %s at size %d is co-signed at %s, %s in the future: check this machine's clock and the signer's",
			ErrStale, cp.Origin, cp.Size, cp.CosignedAt.Format(time.RFC3339), (-age).Round(time.Second))
	}
	return nil
}
