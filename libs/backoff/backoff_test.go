package backoff

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func fixed(j float64) func() float64 { return func() float64 { return j } }

func TestDelay(t *testing.T) {
	const s = time.Second
	purge := Policy{Min: 5 * s, Max: time.Minute}
	for _, tc := range []struct {
		name   string
		p      Policy
		jitter float64
		n      []int
		want   []time.Duration
	}{
		{"doubles to the cap, jitter factor 1", purge, 0.5, []int{0, 1, 2, 3, 4, 5, 6, 100, math.MaxInt},
			[]time.Duration{5 * s, 5 * s, 10 * s, 20 * s, 40 * s, 60 * s, 60 * s, 60 * s, 60 * s}},
		{"lowest jitter halves", purge, 0, []int{1, 2, 5, 6},
			[]time.Duration{2500 * time.Millisecond, 5 * s, 30 * s, 30 * s}},
		{"highest jitter is capped at Max", purge, math.Nextafter(1, 0), []int{1, 2, 3, 4, 5},
			// 0.5 + the highest jitter rounds to 1.5 in floating point.
			[]time.Duration{7500 * time.Millisecond, 15 * s, 30 * s, 60 * s, 60 * s}},
		{"out-of-range jitter is clamped", purge, -3, []int{1}, []time.Duration{2500 * time.Millisecond}},
		{"NaN jitter is clamped", purge, math.NaN(), []int{1}, []time.Duration{2500 * time.Millisecond}},
		{"jitter above 1 is clamped", purge, 7, []int{1, 5}, []time.Duration{7500 * time.Millisecond, 60 * s}},
		{"Max below Min caps", Policy{Min: 5 * s, Max: 3 * s}, 0.5, []int{1, 4}, []time.Duration{3 * s, 3 * s}},
		{"no Max: Min only", Policy{Min: 5 * s}, 0.5, []int{1, 9}, []time.Duration{5 * s, 5 * s}},
		{"no Min: no wait", Policy{Max: time.Minute}, 0.5, []int{1, 9}, []time.Duration{0, 0}},
		{"huge Max does not overflow", Policy{Min: 1, Max: math.MaxInt64}, 0.5, []int{62, 63, 64, 1000},
			[]time.Duration{1 << 61, 1 << 62, math.MaxInt64, math.MaxInt64}},
		{"huge Max, highest jitter", Policy{Min: 1, Max: math.MaxInt64}, math.Nextafter(1, 0), []int{63, 64}, []time.Duration{3 << 61, math.MaxInt64}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			p.Jitter = fixed(tc.jitter)
			var got []time.Duration
			for _, n := range tc.n {
				got = append(got, p.Delay(n))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Delay(%v) (-want +got):\n%s", tc.n, diff)
			}
		})
	}
}

// TestDelayJitterBounds: with the real randomness every wait stays in
// [0.5, 1.5) of the doubled wait and never above Max.
func TestDelayJitterBounds(t *testing.T) {
	p := Policy{Min: 5 * time.Second, Max: time.Minute}
	for n := 1; n <= 8; n++ {
		base := min(5*time.Second<<(n-1), time.Minute)
		lo, hi := base/2, min(base+base/2, time.Minute)
		spread := map[time.Duration]bool{}
		for range 1000 {
			d := p.Delay(n)
			if d < lo || d > hi {
				t.Fatalf("Delay(%d) = %v, want in [%v, %v]", n, d, lo, hi)
			}
			spread[d] = true
		}
		if len(spread) < 100 {
			t.Fatalf("Delay(%d) took %d distinct values in 1000 draws: not jittered", n, len(spread))
		}
	}
}

func TestBackoffNextAndReset(t *testing.T) {
	b := New(Policy{Min: 5 * time.Second, Max: time.Minute, Jitter: fixed(0.5)})
	var got []time.Duration
	for range 7 {
		got = append(got, b.Next())
	}
	if b.Failures() != 7 {
		t.Fatalf("Failures() = %d after 7 Next, want 7", b.Failures())
	}
	b.Reset()
	if b.Failures() != 0 {
		t.Fatalf("Failures() = %d after Reset, want 0", b.Failures())
	}
	got = append(got, b.Next(), b.Next())
	want := []time.Duration{5, 10, 20, 40, 60, 60, 60, 5, 10}
	for i := range want {
		want[i] *= time.Second
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("waits (-want +got):\n%s", diff)
	}
}
