// Package ledgerbench measures the catalog store queries behind custody
// audit and custody lineage on a seeded graph of 10,000 logged artifacts:
// the entries about one digest (ListEvents) and a transitive lineage walk
// over all 10,000 nodes, on SQLite and on PostgreSQL. `make bench` runs it
// (bench-catalog-cli); it prints p50 and p99 next to the target.
package ledgerbench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/postgres"
	"github.com/custody-dev/custody/services/catalog/internal/store/postgres/pgtest"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlite"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

const (
	// nodes is the number of artifacts seeded; each is a lineage node.
	nodes = 10_000
	// fanout: artifact i (i > 0) is built from artifact (i-1)/fanout, so
	// the walk down from artifact 0 reaches every artifact within the
	// catalog's depth bound.
	fanout = 4
	// eventsPer is the number of events logged about each artifact besides
	// its publication.
	eventsPer = 2
	// lineageTarget is the target for one transitive walk over the graph.
	lineageTarget = time.Second
	auditSamples  = 300
	walkSamples   = 15
)

func digestN(n int) string { return fmt.Sprintf("sha256:%064x", n+1) }

// seed stores the graph: nodes logged artifacts, artifact 0 built from a
// source commit and every other from its parent, each with eventsPer
// logged events about it.
func seed(b *testing.B, s catalog.Store) {
	b.Helper()
	ctx := context.Background()
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	work := make(chan int)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	per := uint64(1 + eventsPer)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				d := catalog.Dependency{Key: "gitCommit:" + fmt.Sprintf("%040x", 1), Annotations: map[string]string{"kind": "source"}}
				if i > 0 {
					parent := digestN((i - 1) / fanout)
					d = catalog.Dependency{Key: parent, Digest: map[string]string{"sha256": parent[7:]}, Annotations: map[string]string{"kind": "artifact"}}
				}
				r := &catalog.ArtifactRecord{
					Artifact: catalog.Artifact{Name: fmt.Sprintf("app-%d", i), Version: "1.0.0", Digest: digestN(i), Size: 1, Channel: "staging",
						BuilderID: "spiffe://bench/builder/ci", SourceRepo: "https://git.example/app", SourceCommit: "c", CreatedAt: created},
					Envelope: []byte(`{"e":1}`), KeyID: "k1",
					Entry:        catalog.Entry{Leaf: fmt.Appendf(nil, "publish-%d", i)},
					Dependencies: []catalog.Dependency{d},
				}
				id, err := s.InsertArtifact(ctx, r)
				if err == nil {
					err = s.SetLogged(ctx, catalog.Ref{Kind: catalog.KindArtifact, ID: id}, uint64(i)*per, [][]byte{make([]byte, 32)}, []byte("cp"))
				}
				for k := range eventsPer {
					if err != nil {
						break
					}
					var eid int64
					eid, err = s.InsertEvent(ctx, &catalog.Event{Type: "admission.decided", Actor: "spiffe://bench/service/gatekeeper", SubjectDigest: digestN(i),
						CreatedAt: created, Entry: catalog.Entry{Leaf: fmt.Appendf(nil, "event-%d-%d", i, k)}})
					if err == nil {
						err = s.SetLogged(ctx, catalog.Ref{Kind: catalog.KindEvent, ID: eid}, uint64(i)*per+uint64(k)+1, [][]byte{make([]byte, 32)}, []byte("cp"))
					}
				}
				if err != nil {
					fail(fmt.Errorf("seed artifact %d: %w", i, err))
				}
			}
		}()
	}
	for i := range nodes {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// measure times the audit query on random digests and the transitive walk
// down from the root (every node) and up from a leaf, and reports them.
func measure(b *testing.B, name string, s catalog.Store) {
	ctx := context.Background()
	start := time.Now()
	seed(b, s)
	b.Logf("%s: seeded %d artifacts, %d lineage edges and %d events in %s", name, nodes, nodes, nodes*eventsPer, time.Since(start).Round(time.Millisecond))
	// The walk checked once: it reaches every node.
	edges, err := s.Lineage(ctx, digestN(0), catalog.Down, catalog.MaxLineageEdges+1)
	if err != nil || len(edges) != nodes-1 {
		b.Fatalf("walk down from the root: %d edges, %v; want %d", len(edges), err, nodes-1)
	}
	b.ResetTimer()
	for range b.N {
		var audit, down, up []time.Duration
		rng := rand.New(rand.NewPCG(1, 2))
		for range auditSamples {
			d := digestN(rng.IntN(nodes))
			t0 := time.Now()
			got, err := s.EntriesBySubject(ctx, d, -1, catalog.MaxEventsPageSize+1)
			audit = append(audit, time.Since(t0))
			if err != nil || len(got) != 1+eventsPer {
				b.Fatalf("entries about %s: %d, %v", d, len(got), err)
			}
		}
		for range walkSamples {
			t0 := time.Now()
			got, err := s.Lineage(ctx, digestN(0), catalog.Down, catalog.MaxLineageEdges+1)
			down = append(down, time.Since(t0))
			if err != nil || len(got) != nodes-1 {
				b.Fatalf("walk down: %d, %v", len(got), err)
			}
			t0 = time.Now()
			got, err = s.Lineage(ctx, digestN(nodes-1), catalog.Up, catalog.MaxLineageEdges+1)
			up = append(up, time.Since(t0))
			if err != nil || len(got) == 0 {
				b.Fatalf("walk up: %d, %v", len(got), err)
			}
		}
		b.ReportMetric(float64(percentile(audit, 0.5).Microseconds()), "audit-p50-µs")
		b.ReportMetric(float64(percentile(audit, 0.99).Microseconds()), "audit-p99-µs")
		b.ReportMetric(float64(percentile(down, 0.5).Milliseconds()), "lineage-down-10k-p50-ms")
		b.ReportMetric(float64(percentile(down, 0.99).Milliseconds()), "lineage-down-10k-p99-ms")
		fmt.Printf("%s: audit (entries about one digest of %d, %d samples) p50 %s p99 %s\n", name, nodes, auditSamples,
			percentile(audit, 0.5).Round(time.Microsecond), percentile(audit, 0.99).Round(time.Microsecond))
		fmt.Printf("%s: transitive lineage down over %d nodes (%d samples) p50 %s p99 %s, target < %s: %s\n", name, nodes, walkSamples,
			percentile(down, 0.5).Round(time.Microsecond), percentile(down, 0.99).Round(time.Microsecond), lineageTarget,
			verdict(percentile(down, 0.99) < lineageTarget))
		fmt.Printf("%s: lineage up from a leaf (depth %d) p50 %s p99 %s\n", name, depthOf(nodes-1),
			percentile(up, 0.5).Round(time.Microsecond), percentile(up, 0.99).Round(time.Microsecond))
	}
}

func depthOf(i int) int {
	d := 0
	for ; i > 0; i = (i - 1) / fanout {
		d++
	}
	return d + 1
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func BenchmarkLedgerQueries(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		s, err := sqlite.Open(context.Background(), b.TempDir()+"/catalog.db")
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		measure(b, "sqlite", s)
	})
	b.Run("postgres", func(b *testing.B) {
		s, err := postgres.Open(context.Background(), pgtest.Database(b))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		measure(b, "postgres", s)
	})
}
