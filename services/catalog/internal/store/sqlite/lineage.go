package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlquery"
)

// lineageMigration adds the lineage graph: one edge per resolved dependency
// of an artifact's recorded provenance, indexed both ways, and an index of
// logged events by subject in log order for audits.
var lineageMigration = migration{
	ddl: `CREATE TABLE lineage_edges (
		id              INTEGER PRIMARY KEY,
		artifact_id     INTEGER NOT NULL REFERENCES artifacts (id),
		artifact_digest TEXT    NOT NULL, -- the dependent artifact's
		dependency      TEXT    NOT NULL, -- node key: sha256:<hex>, <alg>:<hex> or uri:<uri>
		uri             TEXT    NOT NULL,
		name            TEXT    NOT NULL,
		digests         TEXT    NOT NULL, -- JSON object, algorithm to value
		annotations     TEXT    NOT NULL, -- JSON object of strings
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
func fillEdges(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT id, digest, envelope FROM artifacts ORDER BY id`)
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
	err = rows.Err()
	rows.Close()
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := insertEdges(tx, r.id, r.digest, r.deps); err != nil {
			return fmt.Errorf("artifact %d: %w", r.id, err)
		}
	}
	return nil
}

// insertEdges stores an artifact's lineage edges, in the caller's
// transaction.
func insertEdges(tx *sql.Tx, artifactID int64, digest string, deps []catalog.Dependency) error {
	for _, d := range deps {
		digests, err := jsonObject(d.Digest)
		if err != nil {
			return err
		}
		annotations, err := jsonObject(d.Annotations)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO lineage_edges (artifact_id, artifact_digest, dependency, uri, name, digests, annotations)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (artifact_id, dependency) DO NOTHING`,
			artifactID, digest, d.Key, d.URI, d.Name, digests, annotations); err != nil {
			return fmt.Errorf("insert lineage edge to %s: %w", d.Key, err)
		}
	}
	return nil
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
// cycles; SQLite's queue is first in, first out, so edges come breadth
// first and limit keeps the nearest.
func (s *Store) Lineage(ctx context.Context, node string, dir catalog.Direction, limit int) ([]catalog.Edge, error) {
	// start matches the edges at node; next is the node an edge leads to.
	start, next := "e.artifact_digest", "e.dependency"
	if dir == catalog.Down {
		start, next = next, start
	}
	q := `WITH RECURSIVE walk (edge_id, next) AS (
			SELECT e.id, ` + next + ` FROM lineage_edges e JOIN artifacts a ON a.id = e.artifact_id
			WHERE ` + start + ` = ? AND a.checkpoint IS NOT NULL
			UNION
			SELECT e.id, ` + next + ` FROM walk w JOIN lineage_edges e ON ` + start + ` = w.next
			JOIN artifacts a ON a.id = e.artifact_id WHERE a.checkpoint IS NOT NULL
			LIMIT ?
		)
		SELECT ` + sqlquery.EdgeColumns + `, e.digests, e.annotations
		FROM walk w JOIN lineage_edges e ON e.id = w.edge_id JOIN artifacts a ON a.id = e.artifact_id`
	rows, err := s.db.QueryContext(ctx, q, node, limit)
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

// digestsChunk bounds the parameters of one IN list.
const digestsChunk = 500

// LoggedArtifactsByDigests returns the logged artifacts with any of digests.
func (s *Store) LoggedArtifactsByDigests(ctx context.Context, digests []string) ([]catalog.Listed, error) {
	var out []catalog.Listed
	for len(digests) > 0 {
		chunk := digests[:min(len(digests), digestsChunk)]
		digests = digests[len(chunk):]
		args := make([]any, len(chunk))
		for i, d := range chunk {
			args[i] = d
		}
		rows, err := s.db.QueryContext(ctx, `SELECT `+sqlquery.ListedColumns+`
			FROM `+sqlquery.ListedFrom+` WHERE a.checkpoint IS NOT NULL AND a.digest IN (?`+strings.Repeat(", ?", len(chunk)-1)+`) ORDER BY a.id`, args...)
		if err != nil {
			return nil, fmt.Errorf("read artifacts by digest: %w", err)
		}
		list, err := scanListed(rows)
		if err != nil {
			return nil, fmt.Errorf("read artifacts by digest: %w", err)
		}
		out = append(out, list...)
	}
	return out, nil
}

// EntriesBySubject returns logged entries about digest in log order.
func (s *Store) EntriesBySubject(ctx context.Context, digest string, afterIndex int64, limit int) ([]catalog.Entry, error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT log_index, leaf, search_from, proof, checkpoint FROM artifacts
			WHERE digest = ?1 AND checkpoint IS NOT NULL AND log_index > ?2
		UNION ALL
		SELECT s.log_index, s.leaf, s.search_from, s.proof, s.checkpoint FROM signatures s JOIN artifacts a ON a.id = s.artifact_id
			WHERE a.digest = ?1 AND s.checkpoint IS NOT NULL AND s.log_index > ?2
		UNION ALL
		SELECT log_index, leaf, search_from, proof, checkpoint FROM events
			WHERE subject_digest = ?1 AND checkpoint IS NOT NULL AND log_index > ?2
		ORDER BY 1 LIMIT ?3`, digest, afterIndex, limit)
	if err != nil {
		return nil, fmt.Errorf("read entries about %s: %w", digest, err)
	}
	defer rows.Close()
	var out []catalog.Entry
	for rows.Next() {
		var (
			e         catalog.Entry
			index     sql.NullInt64
			from      int64
			proofFlat []byte
		)
		if err := rows.Scan(&index, &e.Leaf, &from, &proofFlat, &e.Checkpoint); err != nil {
			return nil, fmt.Errorf("read entries about %s: %w", digest, err)
		}
		if err := fillEntry(&e, from, index, proofFlat); err != nil {
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
	rows, err := s.db.QueryContext(ctx, `SELECT log_index, leaf, search_from, proof, checkpoint FROM events
		WHERE subject_digest = ?1 AND type = ?2 AND checkpoint IS NOT NULL ORDER BY log_index LIMIT ?3`, digest, typ, limit)
	if err != nil {
		return nil, fmt.Errorf("read %s events about %s: %w", typ, digest, err)
	}
	defer rows.Close()
	var out []catalog.Entry
	for rows.Next() {
		var (
			e         catalog.Entry
			index     sql.NullInt64
			from      int64
			proofFlat []byte
		)
		if err := rows.Scan(&index, &e.Leaf, &from, &proofFlat, &e.Checkpoint); err != nil {
			return nil, fmt.Errorf("read %s events about %s: %w", typ, digest, err)
		}
		if err := fillEntry(&e, from, index, proofFlat); err != nil {
			return nil, fmt.Errorf("read %s events about %s: %w", typ, digest, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s events about %s: %w", typ, digest, err)
	}
	return out, nil
}

// scanListed reads and closes rows of sqlquery.ListedColumns.
func scanListed(rows *sql.Rows) ([]catalog.Listed, error) {
	defer rows.Close()
	var out []catalog.Listed
	for rows.Next() {
		var (
			l               catalog.Listed
			a               = &l.Artifact
			created, signed string
			err             error
		)
		if err := rows.Scan(&l.ID, &a.Name, &a.Version, &a.Digest, &a.Size, &a.Channel, &a.BuilderID, &a.SourceRepo, &a.SourceCommit,
			&created, &l.KeyID, &signed); err != nil {
			return nil, err
		}
		if a.CreatedAt, err = parseTime(created); err != nil {
			return nil, fmt.Errorf("row %d: %w", l.ID, err)
		}
		if l.SignedAt, err = parseTime(signed); err != nil {
			return nil, fmt.Errorf("row %d: signed at: %w", l.ID, err)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// DeploymentsOf returns the deployments of logged artifacts with digests.
func (s *Store) DeploymentsOf(ctx context.Context, digests []string) ([]catalog.Deployed, error) {
	var out []catalog.Deployed
	for len(digests) > 0 {
		chunk := digests[:min(len(digests), digestsChunk)]
		digests = digests[len(chunk):]
		args := make([]any, len(chunk))
		for i, d := range chunk {
			args[i] = d
		}
		rows, err := s.db.QueryContext(ctx, `SELECT d.id, d.artifact_id, d.environment, d.actor, d.deployed_at, a.name, a.version, a.digest
			FROM deployments d JOIN artifacts a ON a.id = d.artifact_id
			WHERE a.checkpoint IS NOT NULL AND a.digest IN (?`+strings.Repeat(", ?", len(chunk)-1)+`) ORDER BY d.id`, args...)
		if err != nil {
			return nil, fmt.Errorf("read deployments: %w", err)
		}
		for rows.Next() {
			var (
				d        catalog.Deployed
				deployed string
			)
			if err := rows.Scan(&d.Deployment.ID, &d.Deployment.ArtifactID, &d.Deployment.Environment, &d.Deployment.Actor, &deployed,
				&d.Artifact.Name, &d.Artifact.Version, &d.Artifact.Digest); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read deployments: %w", err)
			}
			if d.Deployment.DeployedAt, err = parseTime(deployed); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read deployments: %w", err)
			}
			out = append(out, d)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read deployments: %w", err)
		}
	}
	return out, nil
}
