package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlquery"
)

// lineageMigration adds the lineage graph, as SQLite's (store/sqlite)
// migration 4 does: one edge per resolved dependency of an artifact's
// recorded provenance, indexed both ways, and indexes of logged events by
// subject and logged artifacts by digest, in log order.
var lineageMigration = migration{
	ddl: `CREATE TABLE lineage_edges (
		id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		artifact_id     BIGINT NOT NULL REFERENCES artifacts (id),
		artifact_digest TEXT   NOT NULL, -- the dependent artifact's
		dependency      TEXT   NOT NULL, -- node key: sha256:<hex>, <alg>:<hex> or uri:<uri>
		uri             TEXT   NOT NULL,
		name            TEXT   NOT NULL,
		digests         JSONB  NOT NULL, -- algorithm to value
		annotations     JSONB  NOT NULL, -- object of strings
		UNIQUE (artifact_id, dependency)
	);
	CREATE INDEX lineage_edges_up ON lineage_edges (artifact_digest, dependency);
	CREATE INDEX lineage_edges_down ON lineage_edges (dependency, artifact_digest);
	CREATE INDEX events_by_subject_logged ON events (subject_digest, log_index) WHERE checkpoint IS NOT NULL;
	CREATE INDEX artifacts_by_digest_logged ON artifacts (digest, log_index) WHERE checkpoint IS NOT NULL;`,
	fill: fillEdges,
}

// fillEdges extracts the edges of the artifacts recorded before the catalog
// kept a lineage graph from their envelopes.
func fillEdges(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `SELECT id, digest, envelope FROM artifacts ORDER BY id`)
	if err != nil {
		return err
	}
	type rec struct {
		id     int64
		digest string
		deps   []catalog.Dependency
	}
	var recs []rec
	for rows.Next() {
		var (
			r   rec
			env []byte
		)
		if err := rows.Scan(&r.id, &r.digest, &env); err != nil {
			rows.Close()
			return err
		}
		if r.deps = catalog.EnvelopeDependencies(env); len(r.deps) > 0 {
			recs = append(recs, r)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range recs {
		if err := insertEdges(ctx, tx, r.id, r.digest, r.deps); err != nil {
			return fmt.Errorf("artifact %d: %w", r.id, err)
		}
	}
	return nil
}

// insertEdges stores an artifact's lineage edges, in the caller's
// transaction, in one round trip.
func insertEdges(ctx context.Context, tx pgx.Tx, artifactID int64, digest string, deps []catalog.Dependency) error {
	if len(deps) == 0 {
		return nil
	}
	var b pgx.Batch
	for _, d := range deps {
		digests, err := jsonObject(d.Digest)
		if err != nil {
			return err
		}
		annotations, err := jsonObject(d.Annotations)
		if err != nil {
			return err
		}
		// The JSON goes as text, cast by the server: pgx never re-encodes it.
		b.Queue(`INSERT INTO lineage_edges (artifact_id, artifact_digest, dependency, uri, name, digests, annotations)
			VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7::text::jsonb) ON CONFLICT (artifact_id, dependency) DO NOTHING`,
			artifactID, digest, d.Key, d.URI, d.Name, digests, annotations)
	}
	br := tx.SendBatch(ctx, &b)
	for _, d := range deps {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return fmt.Errorf("insert lineage edge to %s: %w", d.Key, err)
		}
	}
	return br.Close()
}

// limitArg binds a LIMIT as SQLite reads one: negative means no limit
// (LIMIT NULL in PostgreSQL, where a negative LIMIT is an error).
func limitArg(limit int) *int64 {
	if limit < 0 {
		return nil
	}
	n := int64(limit)
	return &n
}

func jsonObject(m map[string]string) (string, error) {
	if len(m) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	return string(b), err
}

// Lineage walks edges of logged artifacts from node with a recursive
// query. UNION (not UNION ALL) keeps each edge once, so the walk ends on
// cycles. PostgreSQL evaluates the recursion one level (working table)
// after another, breadth first, and only as far as the LIMIT on walk
// fetches, so limit keeps the nearest edges; the row numbers keep the
// order the walk reached them in through the joins.
func (s *Store) Lineage(ctx context.Context, node string, dir catalog.Direction, limit int) ([]catalog.Edge, error) {
	q := lineageQuery(dir)
	rows, err := s.db.Query(ctx, q, node, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("walk lineage from %s: %w", node, err)
	}
	defer rows.Close()
	var out []catalog.Edge
	for rows.Next() {
		e, err := sqlquery.ScanEdge(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("walk lineage from %s: %w", node, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("walk lineage from %s: %w", node, err)
	}
	return out, nil
}

// lineageQuery is the walk from $1 in direction dir, at most $2 edges.
func lineageQuery(dir catalog.Direction) string {
	// start matches the edges at node; next is the node an edge leads to.
	start, next := "e.artifact_digest", "e.dependency"
	if dir == catalog.Down {
		start, next = next, start
	}
	// Each step and each edge read back is a LATERAL subquery that OFFSET 0
	// keeps from being flattened, so that it is an index lookup per row
	// reached whatever the planner estimates: on tables without fresh
	// statistics it otherwise hash-joins full scans of both tables at
	// every depth (decision 0065).
	q := `WITH RECURSIVE walk (edge_id, next) AS (
			SELECT e.id, ` + next + ` FROM lineage_edges e JOIN artifacts a ON a.id = e.artifact_id
			WHERE ` + start + ` = $1 AND a.checkpoint IS NOT NULL
			UNION
			SELECT x.id, x.next FROM walk w CROSS JOIN LATERAL (
				SELECT e.id, ` + next + ` AS next FROM lineage_edges e JOIN artifacts a ON a.id = e.artifact_id
				WHERE ` + start + ` = w.next AND a.checkpoint IS NOT NULL OFFSET 0) x
		), reached AS (
			SELECT edge_id, row_number() OVER () AS n FROM (SELECT edge_id FROM walk LIMIT $2) cut
		)
		SELECT x.id, x.aname, x.aversion, x.artifact_digest, x.dependency, x.uri, x.name, x.digests, x.annotations
		FROM reached r CROSS JOIN LATERAL (
			SELECT e.id, a.name AS aname, a.version AS aversion, e.artifact_digest, e.dependency, e.uri, e.name,
				e.digests::text AS digests, e.annotations::text AS annotations, r.n
			FROM lineage_edges e JOIN artifacts a ON a.id = e.artifact_id WHERE e.id = r.edge_id OFFSET 0) x
		ORDER BY x.n`
	return q
}

// LoggedArtifactsByDigests returns the logged artifacts with any of
// digests: one query, the digests bound as one array.
func (s *Store) LoggedArtifactsByDigests(ctx context.Context, digests []string) ([]catalog.Listed, error) {
	if len(digests) == 0 {
		return nil, nil
	}
	rows, err := s.db.Query(ctx, `SELECT `+sqlquery.ListedColumns+`
		FROM `+sqlquery.ListedFrom+` WHERE a.checkpoint IS NOT NULL AND a.digest = ANY($1::text[]) ORDER BY a.id`, digests)
	if err != nil {
		return nil, fmt.Errorf("read artifacts by digest: %w", err)
	}
	defer rows.Close()
	var out []catalog.Listed
	for rows.Next() {
		var (
			l catalog.Listed
			a = &l.Artifact
		)
		if err := rows.Scan(&l.ID, &a.Name, &a.Version, &a.Digest, &a.Size, &a.Channel, &a.BuilderID, &a.SourceRepo, &a.SourceCommit,
			&a.CreatedAt, &l.KeyID, &l.SignedAt); err != nil {
			return nil, fmt.Errorf("read artifacts by digest: %w", err)
		}
		a.CreatedAt, l.SignedAt = a.CreatedAt.UTC(), l.SignedAt.UTC()
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read artifacts by digest: %w", err)
	}
	return out, nil
}

// EntriesBySubject returns logged entries about digest in log order.
func (s *Store) EntriesBySubject(ctx context.Context, digest string, afterIndex int64, limit int) ([]catalog.Entry, error) {
	rows, err := s.db.Query(ctx, `
		SELECT log_index, leaf, search_from, proof, checkpoint FROM artifacts
			WHERE digest = $1 AND checkpoint IS NOT NULL AND log_index > $2
		UNION ALL
		SELECT s.log_index, s.leaf, s.search_from, s.proof, s.checkpoint FROM signatures s JOIN artifacts a ON a.id = s.artifact_id
			WHERE a.digest = $1 AND s.checkpoint IS NOT NULL AND s.log_index > $2
		UNION ALL
		SELECT log_index, leaf, search_from, proof, checkpoint FROM events
			WHERE subject_digest = $1 AND checkpoint IS NOT NULL AND log_index > $2
		ORDER BY 1 LIMIT $3`, digest, afterIndex, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("read entries about %s: %w", digest, err)
	}
	defer rows.Close()
	var out []catalog.Entry
	for rows.Next() {
		var (
			e         catalog.Entry
			index     *int64
			from      int64
			proofFlat []byte
		)
		if err := rows.Scan(&index, &e.Leaf, &from, &proofFlat, &e.Checkpoint); err != nil {
			return nil, fmt.Errorf("read entries about %s: %w", digest, err)
		}
		if err := sqlquery.FillEntry(&e, from, index, proofFlat); err != nil {
			return nil, fmt.Errorf("read entries about %s: %w", digest, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read entries about %s: %w", digest, err)
	}
	return out, nil
}

// EventsOfType returns logged events of type typ about digest in log order.
func (s *Store) EventsOfType(ctx context.Context, digest, typ string, limit int) ([]catalog.Entry, error) {
	rows, err := s.db.Query(ctx, `SELECT log_index, leaf, search_from, proof, checkpoint FROM events
		WHERE subject_digest = $1 AND type = $2 AND checkpoint IS NOT NULL ORDER BY log_index LIMIT $3`, digest, typ, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("read %s events about %s: %w", typ, digest, err)
	}
	defer rows.Close()
	var out []catalog.Entry
	for rows.Next() {
		var (
			e         catalog.Entry
			index     *int64
			from      int64
			proofFlat []byte
		)
		if err := rows.Scan(&index, &e.Leaf, &from, &proofFlat, &e.Checkpoint); err != nil {
			return nil, fmt.Errorf("read %s events about %s: %w", typ, digest, err)
		}
		if err := sqlquery.FillEntry(&e, from, index, proofFlat); err != nil {
			return nil, fmt.Errorf("read %s events about %s: %w", typ, digest, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s events about %s: %w", typ, digest, err)
	}
	return out, nil
}

// DeploymentsOf returns the deployments of logged artifacts with digests.
func (s *Store) DeploymentsOf(ctx context.Context, digests []string) ([]catalog.Deployed, error) {
	if len(digests) == 0 {
		return nil, nil
	}
	rows, err := s.db.Query(ctx, `SELECT d.id, d.artifact_id, d.environment, d.actor, d.deployed_at, a.name, a.version, a.digest
		FROM deployments d JOIN artifacts a ON a.id = d.artifact_id
		WHERE a.checkpoint IS NOT NULL AND a.digest = ANY($1::text[]) ORDER BY d.id`, digests)
	if err != nil {
		return nil, fmt.Errorf("read deployments: %w", err)
	}
	defer rows.Close()
	var out []catalog.Deployed
	for rows.Next() {
		var (
			d        catalog.Deployed
			deployed time.Time
		)
		if err := rows.Scan(&d.Deployment.ID, &d.Deployment.ArtifactID, &d.Deployment.Environment, &d.Deployment.Actor, &deployed,
			&d.Artifact.Name, &d.Artifact.Version, &d.Artifact.Digest); err != nil {
			return nil, fmt.Errorf("read deployments: %w", err)
		}
		d.Deployment.DeployedAt = deployed.UTC()
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read deployments: %w", err)
	}
	return out, nil
}
