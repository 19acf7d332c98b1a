package limits

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrStalled means a transfer moved too few bytes in a progress window. It
// wraps ErrExhausted.
var ErrStalled = fmt.Errorf("%w: transfer too slow", ErrExhausted)

// ErrSuperseded means the transfer was taken over by a newer stream of the
// same caller (a resumed upload).
var ErrSuperseded = errors.New("superseded by a newer stream of the same upload")

// Progress is what an upload must keep up: at least MinRate bytes per second
// over every Window, so one that sends nothing for Window, or crawls, is cut
// off after at most two windows.
type Progress struct {
	Window  time.Duration
	MinRate int64 // bytes per second; 0 only requires that something arrives
	// NewTicker returns a ticker channel and its stop function; nil means
	// time.NewTicker.
	NewTicker func(time.Duration) (<-chan time.Time, func())
}

// need is how many bytes a window must carry; at least one.
func (p Progress) need() int64 {
	return max(1, p.MinRate*int64(p.Window/time.Second))
}

type result[T any] struct {
	v   T
	err error
}

// Receiver turns a blocking receive (a gRPC stream's Recv, which cannot
// time out on its own) into one that fails with ErrStalled when the sender
// does not keep up Progress. One goroutine runs recv; at most one message
// waits in it, so a Receiver buffers nothing beyond that message.
//
// Next and Close are for one goroutine. After Close the handler must return,
// which ends the stream and so unblocks the receiving goroutine.
type Receiver[T any] struct {
	p      Progress
	size   func(T) int
	ch     chan result[T]
	done   chan struct{}
	tick   <-chan time.Time
	stopT  func()
	stop   <-chan struct{}
	window int64
}

// NewReceiver starts receiving with recv. size returns the payload bytes of
// a message. A value from stop (or its closing) makes Next fail with
// ErrSuperseded; nil never does.
func NewReceiver[T any](p Progress, recv func() (T, error), size func(T) int, stop <-chan struct{}) *Receiver[T] {
	newTicker := p.NewTicker
	if newTicker == nil {
		newTicker = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	r := &Receiver[T]{p: p, size: size, ch: make(chan result[T]), done: make(chan struct{}), stop: stop}
	r.tick, r.stopT = newTicker(p.Window)
	go func() {
		for {
			v, err := recv()
			select {
			case r.ch <- result[T]{v, err}:
			case <-r.done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

// Next returns the next message, or the receive error (io.EOF at the end),
// or an error wrapping ErrStalled, ErrSuperseded or ctx's error.
func (r *Receiver[T]) Next(ctx context.Context) (T, error) {
	var zero T
	for {
		select {
		case res := <-r.ch:
			if res.err == nil {
				// Any message is progress, also an empty one; an empty
				// one moves no bytes, so crawling with them fails the rate.
				r.window += int64(max(1, r.size(res.v)))
			}
			return res.v, res.err
		case <-r.tick:
			if need := r.p.need(); r.window < need {
				return zero, fmt.Errorf("%w: %d bytes in the last %s, the minimum is %d (--upload-progress-timeout, --upload-min-rate); the upload was aborted: check the network and upload again",
					ErrStalled, r.window, r.p.Window, need)
			}
			r.window = 0
		case <-r.stop:
			return zero, ErrSuperseded
		case <-ctx.Done():
			return zero, ctx.Err()
		}
	}
}

// SetStop makes a value from stop (or its closing) fail Next with
// ErrSuperseded from then on.
func (r *Receiver[T]) SetStop(stop <-chan struct{}) { r.stop = stop }

// Close stops the ticker and releases the receiving goroutine once its
// pending receive returns.
func (r *Receiver[T]) Close() {
	r.stopT()
	close(r.done)
}
