package sqlite

import (
	"bytes"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// BenchmarkIndexEvents is the store's side of the indexer: batches of
// events of the catalog benchmark's size (leaf, 12-hash proof, one
// co-signed checkpoint) as IndexEvents stores them, 512 at a time (under
// load) and 24 (a lighter load). It reports time and user+sys CPU per
// event.
func BenchmarkIndexEvents(b *testing.B) {
	for _, n := range []int{512, 24} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) { benchmarkIndexEvents(b, n) })
	}
}

func benchmarkIndexEvents(b *testing.B, batch int) {
	s, err := Open(b.Context(), filepath.Join(b.TempDir(), "catalog.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	checkpoint := []byte("custody.test/log\n123456\nq4Tk8b4UoyvT0M9gvSU2E0UwCkSXpmCSgnAlKPVpNpA=\n\n" +
		"— custody.test/log " + string(bytes.Repeat([]byte("A"), 88)) + "\n— custody.test/witness " + string(bytes.Repeat([]byte("B"), 100)) + "\n")
	proof := make([][]byte, 12)
	for i := range proof {
		proof[i] = bytes.Repeat([]byte{byte(i)}, 32)
	}
	created := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	var next uint64
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for b.Loop() {
		events := make([]*catalog.Event, batch)
		for i := range events {
			idx := next + uint64(i)
			details := fmt.Appendf(nil, `{"decision_id":"%d","env":"prod","allow":true}`, idx)
			events[i] = &catalog.Event{Type: "admission.decided", Actor: "spiffe://custody.test/service/gatekeeper",
				Details: details, CreatedAt: created, Entry: catalog.Entry{
					Leaf:  fmt.Appendf(nil, `{"type":"admission.decided","time":"2026-12-03T07:00:00.123456789Z","actor":"spiffe://custody.test/service/gatekeeper","subject":{},"details":%s}`, details),
					Index: idx, SearchFrom: idx, Sequenced: true, Proof: proof, Checkpoint: checkpoint}}
		}
		next += uint64(batch)
		if err := s.IndexEvents(b.Context(), events, next); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(next)/1e3, "µs/event")
	// User+sys CPU of the process per event: steadier than the time on a
	// shared machine.
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(next)/1e3, "cpu-µs/event")
}

// cpuTime is the process's user+sys CPU time in nanoseconds.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
