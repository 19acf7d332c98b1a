// Package load drives one operation from concurrent callers inside a
// benchmark and reports its rate and latency percentiles, so that the
// gatekeeper's admission benchmark and OPA's alone are measured alike.
package load

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Figures are one measurement.
type Figures struct {
	// Calls is how many calls were timed; PerSecond how many completed
	// per second of wall time with all callers busy.
	Calls     int
	PerSecond float64
	// P50 and P99 are latency percentiles in milliseconds.
	P50, P99 float64
	// CPU is the process's user and system CPU per call, in microseconds.
	CPU float64
}

// Run calls op calls times in all from callers goroutines at once, each
// calling again as soon as its last call returned, after a warm-up of
// callers calls that is not timed, and reports decisions/s, p50-ms, p99-ms
// and cpu-µs/decision (user and system CPU of the whole process: the
// fakes and the client too) as benchmark metrics. It ignores b.N: run it
// with -benchtime 1x; ns/op is left at zero. op gets b.Context() and the
// caller's number, from 0; an error from op fails the benchmark.
func Run(b *testing.B, callers, calls int, op func(ctx context.Context, caller int) error) Figures {
	b.Helper()
	ctx := b.Context()
	if _, err := drive(ctx, callers, callers, op); err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	lat, err := drive(ctx, callers, calls, op)
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	f := Figures{Calls: len(lat), PerSecond: float64(len(lat)) / elapsed.Seconds(), P50: ms(percentile(lat, 0.50)), P99: ms(percentile(lat, 0.99)),
		CPU: float64(cpu.Microseconds()) / float64(len(lat))}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(f.PerSecond, "decisions/s")
	b.ReportMetric(f.P50, "p50-ms")
	b.ReportMetric(f.P99, "p99-ms")
	b.ReportMetric(f.CPU, "cpu-µs/decision")
	return f
}

// drive makes calls calls of op from callers goroutines and returns their
// latencies, sorted, or the first error.
func drive(ctx context.Context, callers, calls int, op func(ctx context.Context, caller int) error) ([]time.Duration, error) {
	var (
		next   atomic.Int64
		wg     sync.WaitGroup
		failed atomic.Pointer[error]
	)
	lat := make([][]time.Duration, callers)
	for i := range callers {
		wg.Go(func() {
			for next.Add(1) <= int64(calls) && failed.Load() == nil {
				t := time.Now()
				if err := op(ctx, i); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				lat[i] = append(lat[i], time.Since(t))
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return nil, *err
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	return all, nil
}

// cpuTime is the user and system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// percentile returns the q-quantile of sorted (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*q+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Verdict is "met" or "MISSED".
func Verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
