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

// Progress is what a transfer must keep up: at least MinRate bytes per
// second over every Window, so one that moves nothing for Window, or crawls,
// is cut off after at most two windows.
type Progress struct {
	Window  time.Duration
	MinRate int64 // bytes per second; 0 only requires that something moves
	// What is "upload" (the default when empty) or "download": it names the
	// transfer and its flags (--upload-progress-timeout, ...) in refusals.
	What string
	// NewTicker returns a ticker channel and its stop function; nil means
	// time.NewTicker.
	NewTicker func(time.Duration) (<-chan time.Time, func())
}

// need is how many bytes a window must carry; at least one.
func (p Progress) need() int64 {
	return max(1, p.MinRate*int64(p.Window/time.Second))
}

func (p Progress) ticker() (<-chan time.Time, func()) {
	if p.NewTicker != nil {
		return p.NewTicker(p.Window)
	}
	t := time.NewTicker(p.Window)
	return t.C, t.Stop
}

// stalled is the refusal of a window that carried moved bytes.
func (p Progress) stalled(moved int64) error {
	what := p.What
	if what == "" {
		what = "upload"
	}
	return fmt.Errorf("%w: %d bytes in the last %s, the minimum is %d (--%s-progress-timeout, --%s-min-rate); the %s was aborted: check the network and %s again",
		ErrStalled, moved, p.Window, p.need(), what, what, what, what)
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
	r := &Receiver[T]{p: p, size: size, ch: make(chan result[T]), done: make(chan struct{}), stop: stop}
	r.tick, r.stopT = p.ticker()
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
			if r.window < r.p.need() {
				return zero, r.p.stalled(r.window)
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

// Send runs send in a goroutine of its own and returns its error, or an
// error wrapping ErrStalled as soon as a window of p passes in which send
// reported fewer bytes than p requires, or ctx's error. send reports each
// message it has handed over with sent (an empty message counts as one
// byte, so crawling with them fails the rate).
//
// A gRPC Send blocks while the peer does not read and cannot time out, so
// after an error from Send the caller must return from its handler: that
// ends the stream, which fails send's pending Send. send may thus outlive
// Send's caller, and must release what it holds (file, slot) itself when it
// returns.
func Send(ctx context.Context, p Progress, send func(sent func(n int)) error) error {
	// Counted here, not in send's goroutine, so that a window's bytes are
	// the ones reported before its tick was taken.
	progress, quit := make(chan int), make(chan struct{})
	defer close(quit)
	done := make(chan error, 1)
	go func() {
		done <- send(func(n int) {
			select {
			case progress <- n:
			case <-quit:
			}
		})
	}()
	tick, stop := p.ticker()
	defer stop()
	var window int64
	for {
		select {
		case n := <-progress:
			window += int64(max(1, n))
		case err := <-done:
			return err
		case <-tick:
			if window < p.need() {
				return p.stalled(window)
			}
			window = 0
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
