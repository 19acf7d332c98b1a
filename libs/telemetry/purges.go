package telemetry

import "github.com/prometheus/client_golang/prometheus"

// RegisterPendingPurges exports custody_purge_requests_pending{service}:
// how many purge requests this service owes the cdn-broker (a key
// revocation's, the kill switch's) that the broker has not accepted yet.
// pending is called at every scrape and must be safe for concurrent use.
func RegisterPendingPurges(reg prometheus.Registerer, service string, pending func() int) error {
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "custody_purge_requests_pending",
		Help:        "Purge requests this service made that the cdn-broker has not accepted yet.",
		ConstLabels: prometheus.Labels{"service": service},
	}, func() float64 { return float64(pending()) }))
}
