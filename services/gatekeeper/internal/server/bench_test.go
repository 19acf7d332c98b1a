package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/services/gatekeeper/internal/load"
)

// Targets (issue 10, item 9).
const (
	targetPerSecond64 = 2000 // decisions/s at 64 callers
	targetP99Ms64     = 50
	targetP50Ms1      = 20
)

// BenchmarkAdmit measures admissions with full verification (signature
// against the trust root, key window and revocations from the signer,
// statement, checkpoint, inclusion, the publisher's blob check, the
// policy, the rollback rule, the decision signed by the signer and logged
// by the catalog) through the real mTLS gRPC server with the production
// interceptors, at 1 and 64 concurrent callers, each on its own
// connection. The catalog, signer and publisher are the hand-written fakes
// of this package behind their own mTLS gRPC servers: what is measured is
// the gatekeeper, not the log (the catalog's bench measures that).
// `make bench-gatekeeper` runs it next to BenchmarkEvaluate (policy).
func BenchmarkAdmit(b *testing.B) {
	for _, callers := range []int{1, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			// A decision may take longer than the 1 s of the other tests
			// when 64 callers share two cores with the fakes.
			s := newStackWith(b, stackOptions{timeout: 30 * time.Second})
			s.publish(b, "app", "1.0.0", "prod")
			clients := make([]gatekeeperv1.GatekeeperServiceClient, callers)
			for i := range clients {
				clients[i] = s.client(b, fmt.Sprintf("/deployer/pipeline-%d", i))
			}
			req := &gatekeeperv1.AdmitRequest{Name: "app", Version: "1.0.0", Environment: "prod"}
			f := load.Run(b, callers, 1000, func(ctx context.Context, i int) error {
				resp, err := clients[i].Admit(ctx, req)
				if err == nil && resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
					err = fmt.Errorf("decision %v: %q", resp.GetDecision(), resp.GetReasons())
				}
				return err
			})
			if callers == 1 {
				b.Logf("admission, 1 caller: %.0f decisions/s, p50 %.1f ms (target <= %d: %s), p99 %.1f ms over %d decisions; %.0f µs CPU each",
					f.PerSecond, f.P50, targetP50Ms1, load.Verdict(f.P50 <= targetP50Ms1), f.P99, f.Calls, f.CPU)
			} else {
				b.Logf("admission, %d callers: %.0f decisions/s (target >= %d: %s), p50 %.1f ms, p99 %.1f ms (target <= %d: %s) over %d decisions; %.0f µs CPU each",
					callers, f.PerSecond, targetPerSecond64, load.Verdict(f.PerSecond >= targetPerSecond64), f.P50, f.P99,
					targetP99Ms64, load.Verdict(f.P99 <= targetP99Ms64), f.Calls, f.CPU)
			}
		})
	}
}
