// Package limits bounds what one caller, and all callers together, may hold
// open in the publisher: concurrent transfers and how slowly they may move.
package limits

import (
	"errors"
	"fmt"
	"sync"
)

// ErrExhausted is wrapped by every refusal of this package; the gRPC layer
// maps it to ResourceExhausted. The message names the limit and what to do.
var ErrExhausted = errors.New("limit reached")

// Slots counts concurrent transfers per caller and in total. It never
// blocks: a caller over a limit is refused at once, so a caller that holds
// its slots cannot make others wait. It is safe for concurrent use.
type Slots struct {
	what             string // "uploads", "downloads": for messages
	perCaller, total int
	flag, flagTotal  string // the flags that set the limits, for messages
	mu               sync.Mutex
	byCaller         map[string]int
	inUse            int
}

// NewSlots returns counters of what (e.g. "uploads") allowing perCaller at
// once for one caller and total for all; flag and flagTotal name the
// settings in refusals.
func NewSlots(what string, perCaller, total int, flag, flagTotal string) *Slots {
	return &Slots{what: what, perCaller: perCaller, total: total, flag: flag, flagTotal: flagTotal, byCaller: map[string]int{}}
}

// Acquire takes one slot for caller, or returns an error wrapping
// ErrExhausted naming the limit. The returned release gives the slot back;
// calling it more than once has no further effect.
func (s *Slots) Acquire(caller string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byCaller[caller] >= s.perCaller {
		return nil, fmt.Errorf("%w: %s already has %d concurrent %s, the per-caller limit (%s): wait for one to finish, or raise the limit",
			ErrExhausted, caller, s.byCaller[caller], s.what, s.flag)
	}
	if s.inUse >= s.total {
		return nil, fmt.Errorf("%w: the publisher has %d concurrent %s, its total limit (%s): retry with backoff",
			ErrExhausted, s.inUse, s.what, s.flagTotal)
	}
	s.byCaller[caller]++
	s.inUse++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.inUse--
			if s.byCaller[caller]--; s.byCaller[caller] == 0 {
				delete(s.byCaller, caller)
			}
		})
	}, nil
}

// InUse returns the number of slots taken by caller and in total.
func (s *Slots) InUse(caller string) (mine, all int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byCaller[caller], s.inUse
}
