package server

import "github.com/prometheus/client_golang/prometheus"

// HTTPMetrics are the edge's HTTP-side metrics: what it served, what it
// refused and why, and how often the cache answered.
type HTTPMetrics struct {
	// Requests counts finished blob requests by HTTP status code.
	Requests *prometheus.CounterVec
	// Forbidden counts 403s by reason: a token error (expired, digest,
	// unknown-key: a key the trust root does not list, key-outside-window:
	// one it lists with a window that does not hold now, signature,
	// malformed, issued-at, lifetime, client-ip, invalid) or a stop
	// (stopped, before-epoch, revoked).
	Forbidden *prometheus.CounterVec
	// BytesServed counts body bytes written for 200 and 206 answers.
	BytesServed prometheus.Counter
	// CacheLookups counts cache answers by result (hit, miss); the hit
	// ratio is hit / (hit + miss).
	CacheLookups *prometheus.CounterVec
	// CacheEvictions counts blobs evicted to keep the cache within its
	// bound (not purges, not integrity failures).
	CacheEvictions prometheus.Counter
}

// NewHTTPMetrics registers the edge's HTTP metrics on reg.
func NewHTTPMetrics(reg prometheus.Registerer) *HTTPMetrics {
	m := &HTTPMetrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custody_edge_http_requests_total", Help: "Finished blob requests by HTTP status code.",
		}, []string{"code"}),
		Forbidden: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custody_edge_forbidden_total", Help: "Refused (403) blob requests by reason.",
		}, []string{"reason"}),
		BytesServed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "custody_edge_bytes_served_total", Help: "Body bytes served for 200 and 206 answers.",
		}),
		CacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custody_edge_cache_lookups_total", Help: "Cache lookups by result (hit, miss).",
		}, []string{"result"}),
		CacheEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "custody_edge_cache_evictions_total", Help: "Blobs evicted (least recently used) to keep the cache within --cache-max-mib.",
		}),
	}
	reg.MustRegister(m.Requests, m.Forbidden, m.BytesServed, m.CacheLookups, m.CacheEvictions)
	return m
}
