package telemetry

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRegisterPendingPurges(t *testing.T) {
	reg := prometheus.NewRegistry()
	var n atomic.Int64
	if err := RegisterPendingPurges(reg, "signer", func() int { return int(n.Load()) }); err != nil {
		t.Fatal(err)
	}
	n.Store(3)
	want := `
# HELP custody_purge_requests_pending Purge requests this service made that the cdn-broker has not accepted yet.
# TYPE custody_purge_requests_pending gauge
custody_purge_requests_pending{service="signer"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "custody_purge_requests_pending"); err != nil {
		t.Fatal(err)
	}
	if err := RegisterPendingPurges(reg, "signer", func() int { return 0 }); err == nil {
		t.Fatal("registered twice without an error")
	}
}
