package daemon

import (
	"os"
	"runtime/debug"
)

// GCPercent sets the garbage collector's target (the heap growth between
// collections, in percent of the live heap) to pct, unless the operator set
// GOGC in the process's environment, which then wins. It reports whether it
// changed the setting. A service whose live heap is small but whose requests
// allocate quickly (the catalog's event path, decision 0068) spends a large
// share of its CPU collecting at Go's default of 100.
func GCPercent(pct int) bool {
	if os.Getenv("GOGC") != "" {
		return false
	}
	debug.SetGCPercent(pct)
	return true
}
