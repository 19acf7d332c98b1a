package postgres

import (
	"fmt"
	"strings"
	"testing"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/postgres/pgtest"
)

// TestLineageWalkUsesIndexes: on 10,000 freshly inserted artifacts and
// edges, before any ANALYZE (as right after a bulk load, and until
// autovacuum gets to it), the plan of the walk in each direction looks
// edges and artifacts up by index at every step instead of scanning the
// tables, and connections run without JIT (decision 0065). The timings
// are bench-catalog-cli's.
func TestLineageWalkUsesIndexes(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, pgtest.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.db.Exec(ctx, `INSERT INTO artifacts (name, version, digest, size, channel, builder_id, source_repo, source_commit,
			created_at, envelope, key_id, current_key_id, leaf, search_from, log_index, proof, checkpoint)
		SELECT 'app-'||i, '1.0.0', 'sha256:'||lpad(to_hex(i+1), 64, '0'), 1, 'staging', 'b', 'r', 'c', now(), '\x00', 'k1', 'k1',
			('leaf'||i)::bytea, 0, i, '\x00', 'cp'
		FROM generate_series(0, 9999) i`); err != nil {
		t.Fatal(err)
	}
	// Artifact i is built from artifact (i-1)/4: a tree of depth 7.
	if _, err := s.db.Exec(ctx, `INSERT INTO lineage_edges (artifact_id, artifact_digest, dependency, uri, name, digests, annotations)
		SELECT a.id, a.digest, CASE WHEN i = 0 THEN 'gitCommit:'||lpad('1', 40, '0') ELSE 'sha256:'||lpad(to_hex((i-1)/4+1), 64, '0') END,
			'', '', '{}', '{}'
		FROM generate_series(0, 9999) i JOIN artifacts a ON a.name = 'app-'||i`); err != nil {
		t.Fatal(err)
	}
	var jit string
	if err := s.db.QueryRow(ctx, `SHOW jit`).Scan(&jit); err != nil || jit != "off" {
		t.Errorf("jit = %q (%v), want off", jit, err)
	}
	leaf, root := fmt.Sprintf("sha256:%064x", 10000), fmt.Sprintf("sha256:%064x", 1)
	for _, tc := range []struct {
		dir   catalog.Direction
		node  string
		edges int
	}{{catalog.Up, leaf, 8}, {catalog.Down, root, 9999}} {
		rows, err := s.db.Query(ctx, "EXPLAIN "+lineageQuery(tc.dir), tc.node, 10001)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, line)
		}
		rows.Close()
		if p := strings.Join(plan, "\n"); strings.Contains(p, "Seq Scan") {
			t.Errorf("walk %v scans a table:\n%s", tc.dir, p)
		}
		edges, err := s.Lineage(ctx, tc.node, tc.dir, 10001)
		if err != nil || len(edges) != tc.edges {
			t.Errorf("walk %v from %s: %d edges, %v; want %d", tc.dir, tc.node, len(edges), err, tc.edges)
		}
	}
}
