package limits

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSlots(t *testing.T) {
	s := NewSlots("uploads", 2, 3, "--per", "--total")
	var releases []func()
	take := func(caller string) error {
		r, err := s.Acquire(caller)
		if err == nil {
			releases = append(releases, r)
		}
		return err
	}
	steps := []struct {
		caller string
		want   string // "" for success, else the flag named
	}{
		{"a", ""}, {"a", ""}, {"a", "--per"}, {"b", ""}, {"c", "--total"}, {"b", "--total"},
	}
	for i, st := range steps {
		err := take(st.caller)
		switch {
		case st.want == "" && err != nil:
			t.Fatalf("step %d (%s): %v", i, st.caller, err)
		case st.want != "" && (!errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), st.want)):
			t.Fatalf("step %d (%s): %v, want ErrExhausted naming %s", i, st.caller, err, st.want)
		}
	}
	releases[0]()
	releases[0]() // twice: no effect
	if mine, all := s.InUse("a"); mine != 1 || all != 2 {
		t.Fatalf("after one release: a holds %d, %d in all", mine, all)
	}
	if err := take("c"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
}

func TestSlotsConcurrent(t *testing.T) {
	s := NewSlots("x", 5, 1000, "p", "t")
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for range 100 {
		wg.Go(func() {
			if _, err := s.Acquire("one"); err == nil {
				mu.Lock()
				got++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got != 5 {
		t.Fatalf("%d acquired, want 5", got)
	}
}

// fakeTicker ticks when the test says so.
type fakeTicker struct{ c chan time.Time }

func (f *fakeTicker) new(time.Duration) (<-chan time.Time, func()) { return f.c, func() {} }

func TestReceiverProgress(t *testing.T) {
	tests := map[string]struct {
		minRate int64
		// sizes per window; -1 means the stream ends there.
		windows [][]int
		want    error // at the end
	}{
		"steady":        {minRate: 10, windows: [][]int{{6, 6}, {20}, {10}}, want: nil},
		"stall":         {minRate: 0, windows: [][]int{{1}, {}}, want: ErrStalled},
		"crawl":         {minRate: 10, windows: [][]int{{20}, {1, 1, 1}}, want: ErrStalled},
		"empty chunks":  {minRate: 10, windows: [][]int{{0, 0, 0}}, want: ErrStalled},
		"stall at once": {minRate: 0, windows: [][]int{{}}, want: ErrStalled},
		"ends in time":  {minRate: 10, windows: [][]int{{10, -1}}, want: io.EOF},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			msgs := make(chan int)
			recv := func() (int, error) {
				n, ok := <-msgs
				if !ok || n < 0 {
					return 0, io.EOF
				}
				return n, nil
			}
			ft := &fakeTicker{c: make(chan time.Time)}
			r := NewReceiver(Progress{Window: time.Second, MinRate: tt.minRate, NewTicker: ft.new}, recv, func(n int) int { return n }, nil)
			defer r.Close()
			var err error
		windows:
			for _, w := range tt.windows {
				for _, n := range w {
					go func() { msgs <- n }()
					if _, err = r.Next(t.Context()); err != nil {
						break windows
					}
				}
				// End the window: Next sees the tick, then either fails or
				// waits again until the cancel.
				ctx, cancel := context.WithCancel(t.Context())
				go func() { ft.c <- time.Now(); cancel() }()
				if _, err = r.Next(ctx); !errors.Is(err, context.Canceled) {
					break
				}
				err = nil
			}
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReceiverStopAndContext(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	recv := func() (int, error) { <-block; return 0, io.EOF }
	stop := make(chan struct{})
	r := NewReceiver(Progress{Window: time.Hour}, recv, func(int) int { return 0 }, nil)
	r.SetStop(stop)
	close(stop)
	if _, err := r.Next(t.Context()); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("stopped: %v", err)
	}
	r.Close()
	r2 := NewReceiver(Progress{Window: time.Hour}, recv, func(int) int { return 0 }, nil)
	defer r2.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := r2.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
}

func TestSendProgress(t *testing.T) {
	tests := map[string]struct {
		minRate int64
		// bytes reported per window; the send ends after the last window
		// when ends is set, else it blocks until the stream ends.
		windows [][]int
		ends    bool
		want    error
	}{
		"steady":        {minRate: 10, windows: [][]int{{6, 6}, {20}, {10}}, ends: true},
		"stops reading": {minRate: 0, windows: [][]int{{1}, {}}, want: ErrStalled},
		"crawls":        {minRate: 10, windows: [][]int{{20}, {1, 1, 1}}, want: ErrStalled},
		"empty sends":   {minRate: 10, windows: [][]int{{0, 0, 0}}, want: ErrStalled},
		"never sends":   {minRate: 0, windows: [][]int{{}}, want: ErrStalled},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ft := &fakeTicker{c: make(chan time.Time)}
			steps := make(chan int) // a size to report; -1 ends the send
			reported := make(chan struct{})
			streamEnded := make(chan struct{})
			sendDone := make(chan struct{})
			errc := make(chan error, 1)
			go func() {
				errc <- Send(t.Context(), Progress{Window: time.Second, MinRate: tt.minRate, What: "download", NewTicker: ft.new}, func(sent func(int)) error {
					defer close(sendDone)
					for {
						select {
						case n := <-steps:
							if n < 0 {
								return nil
							}
							sent(n)
							reported <- struct{}{}
						case <-streamEnded:
							return errors.New("stream ended")
						}
					}
				})
			}()
			var err error
		windows:
			for _, w := range tt.windows {
				for _, n := range w {
					steps <- n
					<-reported
				}
				select {
				case ft.c <- time.Now():
				case err = <-errc:
					break windows
				}
			}
			if tt.ends {
				steps <- -1
			}
			if err == nil {
				err = <-errc
			}
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if tt.want != nil && !strings.Contains(err.Error(), "--download-progress-timeout") {
				t.Errorf("refusal %q does not name --download-progress-timeout", err)
			}
			// The handler returns, the stream ends, the send goroutine
			// follows.
			close(streamEnded)
			<-sendDone
		})
	}
}

func TestSendContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	block := make(chan struct{})
	defer close(block)
	err := Send(ctx, Progress{Window: time.Hour}, func(func(int)) error { <-block; return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
}
