package sqlquery

import (
	"encoding/json"
	"fmt"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// EdgeColumns are the columns ScanEdge reads, in order, for a query that
// joins lineage_edges as e with artifacts as a. A back end whose JSON
// columns are not text casts digests and annotations to text.
const EdgeColumns = "e.id, a.name, a.version, e.artifact_digest, e.dependency, e.uri, e.name"

// ScanEdge reads one lineage edge: the EdgeColumns, then its digests and
// annotations as JSON object text.
func ScanEdge(scan func(dest ...any) error) (catalog.Edge, error) {
	var (
		e                    catalog.Edge
		digests, annotations string
		err                  error
	)
	if err := scan(&e.ID, &e.Artifact.Name, &e.Artifact.Version, &e.Artifact.Digest, &e.Dependency.Key,
		&e.Dependency.URI, &e.Dependency.Name, &digests, &annotations); err != nil {
		return e, err
	}
	if e.Dependency.Digest, err = stringMap(digests); err != nil {
		return e, fmt.Errorf("edge %d digests: %w", e.ID, err)
	}
	if e.Dependency.Annotations, err = stringMap(annotations); err != nil {
		return e, fmt.Errorf("edge %d annotations: %w", e.ID, err)
	}
	return e, nil
}

// stringMap parses a stored JSON object of strings; an empty one is nil.
func stringMap(s string) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}
