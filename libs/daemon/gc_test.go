package daemon

import (
	"runtime/debug"
	"testing"
)

func TestGCPercentYieldsToGOGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	t.Setenv("GOGC", "")
	if !GCPercent(300) {
		t.Fatal("GCPercent did not apply without GOGC")
	}
	if got := debug.SetGCPercent(100); got != 300 {
		t.Fatalf("GC percent %d after GCPercent(300), want 300", got)
	}
	t.Setenv("GOGC", "150")
	if GCPercent(300) {
		t.Fatal("GCPercent overrode the operator's GOGC")
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GC percent %d with GOGC set, want it unchanged (100)", got)
	}
}
