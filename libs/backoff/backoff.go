// Package backoff computes the waits between retries of a hand-off that a
// peer refused: capped exponential growth with jitter, and a reset once the
// peer accepts.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is how long to wait after failures in a row. The n-th failure in
// a row waits Min·2^(n-1), capped at Max, times a jitter factor in
// [0.5, 1.5), capped at Max again: no wait is ever longer than Max, and
// retries of many holders of the same policy spread out rather than
// arriving at the peer together. A Policy has no timer: the caller waits.
type Policy struct {
	// Min is the first wait; zero or negative: no wait.
	Min time.Duration
	// Max caps every wait; below Min it is the only wait. Zero or
	// negative: Min (no growth).
	Max time.Duration
	// Jitter returns a number in [0, 1) (others are clamped into it);
	// nil: math/rand/v2.Float64.
	Jitter func() float64
}

// Delay is the wait after the n-th failure in a row (n < 1 counts as 1).
func (p Policy) Delay(n int) time.Duration {
	if p.Min <= 0 {
		return 0
	}
	ceiling := p.Max
	if ceiling <= 0 {
		ceiling = p.Min
	}
	d := min(p.Min, ceiling)
	for i := 1; i < n && d < ceiling; i++ {
		if d > ceiling/2 {
			d = ceiling
			break
		}
		d *= 2
	}
	jitter := p.Jitter
	if jitter == nil {
		jitter = rand.Float64
	}
	j := jitter()
	if !(j >= 0) { // also NaN
		j = 0
	}
	j = min(j, 1)
	// In floating point, since d·1.5 may not fit a Duration.
	if f := float64(d) * (0.5 + j); f < float64(ceiling) {
		return time.Duration(f)
	}
	return ceiling
}

// Backoff counts the failures in a row of one hand-off. The zero value is
// not usable; New returns one. It is not safe for concurrent use: one
// retry loop owns it.
type Backoff struct {
	policy Policy
	failed int
}

// New returns a Backoff with no failures yet.
func New(p Policy) *Backoff { return &Backoff{policy: p} }

// Next records one more failure in a row and returns the wait before the
// next attempt.
func (b *Backoff) Next() time.Duration {
	if b.failed < 1<<20 { // bounded: the wait is capped long before
		b.failed++
	}
	return b.policy.Delay(b.failed)
}

// Reset forgets the failures: the peer accepted, so the next failure waits
// Min again.
func (b *Backoff) Reset() { b.failed = 0 }

// Failures is how many failures in a row Next has recorded since the last
// Reset.
func (b *Backoff) Failures() int { return b.failed }
