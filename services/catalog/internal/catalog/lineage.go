package catalog

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/custody-dev/custody/libs/attest"
)

// Direction says which way a lineage walk goes.
type Direction int

// Directions.
const (
	// Up walks to what a node was built from (its ancestors).
	Up Direction = iota + 1
	// Down walks to what was built from a node (its descendants).
	Down
)

// Lineage bounds: a walk reports at most MaxLineageEdges edges and goes at
// most MaxLineageDepth edges from its start; beyond either it is cut and
// marked truncated.
const (
	MaxLineageDepth = 64
	MaxLineageEdges = 10000
)

// Dependency is one resolved dependency of an artifact's provenance: Key
// (attest.ResourceDescriptor.Key) is the graph node it names.
type Dependency struct {
	Key         string
	URI         string
	Name        string
	Digest      map[string]string
	Annotations map[string]string
}

// Edge says that an artifact was built from a dependency, per the signed
// provenance of the artifact. Depth is the number of edges from the walk's
// start (1 for the edges at it).
type Edge struct {
	ID int64
	// Artifact is the dependent artifact (name, version, digest).
	Artifact   Artifact
	Dependency Dependency
	Depth      int
}

// LineageResult is the answer to a lineage walk.
type LineageResult struct {
	Edges []Edge
	// Artifacts are the logged artifacts among the nodes reached, the
	// dependents of every edge and the dependencies that are artifacts.
	Artifacts []Listed
	// Deployments are, for a walk down, the deployments of the artifacts
	// reached and of the start node.
	Deployments []Deployed
	// Truncated says a bound cut the walk short.
	Truncated bool
}

// Deployed is a deployment with the artifact deployed.
type Deployed struct {
	Artifact   Artifact
	Deployment Deployment
}

// dependenciesOf converts a provenance's resolved dependencies.
func dependenciesOf(deps []attest.ResourceDescriptor) []Dependency {
	out := make([]Dependency, 0, len(deps))
	for _, d := range deps {
		out = append(out, Dependency{Key: d.Key(), URI: d.URI, Name: d.Name, Digest: d.Digest, Annotations: d.Annotations})
	}
	return out
}

// validNode checks a lineage node name sent by a client.
func validNode(what, node string) error {
	if !attest.ValidDependencyKey(node) {
		return fmt.Errorf("%w: %s %q: want sha256:<64 lowercase hex>, <algorithm>:<lowercase hex> (e.g. gitCommit:<hex>) or uri:<uri>", ErrInvalid, what, trunc(node))
	}
	return nil
}

func lineageDepth(maxDepth int) (int, error) {
	switch {
	case maxDepth < 0:
		return 0, fmt.Errorf("%w: max_depth %d: want 0 (the default, %d) to %d", ErrInvalid, maxDepth, MaxLineageDepth, MaxLineageDepth)
	case maxDepth == 0 || maxDepth > MaxLineageDepth:
		return MaxLineageDepth, nil
	}
	return maxDepth, nil
}

// Lineage walks the dependency graph from node: with Up, the artifacts
// and resources node was built from, transitively; with Down, the logged
// artifacts built from node, transitively. It returns every edge reached
// once, at the smallest depth it is reached at (breadth first), up to
// maxDepth edges from node (0: MaxLineageDepth) and MaxLineageEdges edges.
// A cycle, which a builder can claim, ends the walk where it closes. Edges
// are the builders' claims, taken from the signed provenance recorded in
// the log.
func (c *Catalog) Lineage(ctx context.Context, node string, dir Direction, maxDepth int) (*LineageResult, error) {
	if err := validNode("node", node); err != nil {
		return nil, err
	}
	if dir != Up && dir != Down {
		return nil, fmt.Errorf("%w: direction: want up or down", ErrInvalid)
	}
	depth, err := lineageDepth(maxDepth)
	if err != nil {
		return nil, err
	}
	// One more than the bound tells whether the walk was cut.
	edges, err := c.store.Lineage(ctx, node, dir, MaxLineageEdges+1)
	if err != nil {
		return nil, unavailable("walk lineage", err)
	}
	res := &LineageResult{}
	if len(edges) > MaxLineageEdges {
		edges, res.Truncated = edges[:MaxLineageEdges], true
	}
	var cut bool
	res.Edges, cut = withDepths(node, dir, edges, depth)
	res.Truncated = res.Truncated || cut
	if res.Artifacts, err = c.artifactsOf(ctx, res.Edges); err != nil {
		return nil, err
	}
	if dir == Down {
		digests := map[string]bool{}
		if strings.HasPrefix(node, "sha256:") {
			digests[node] = true
		}
		for _, e := range res.Edges {
			digests[e.Artifact.Digest] = true
		}
		if len(digests) > 0 {
			if res.Deployments, err = c.store.DeploymentsOf(ctx, slices.Sorted(maps.Keys(digests))); err != nil {
				return nil, unavailable("look up deployments", err)
			}
		}
	}
	return res, nil
}

// withDepths sets each edge's depth, its distance from start, and drops
// the edges deeper than maxDepth (reporting whether it dropped any).
// Edges come in the order a breadth-first walk reached them, each once.
func withDepths(start string, dir Direction, edges []Edge, maxDepth int) ([]Edge, bool) {
	// from and to of an edge in the walk's direction.
	from := func(e *Edge) string { return e.Artifact.Digest }
	to := func(e *Edge) string { return e.Dependency.Key }
	if dir == Down {
		from, to = to, from
	}
	byFrom := map[string][]int{}
	for i := range edges {
		byFrom[from(&edges[i])] = append(byFrom[from(&edges[i])], i)
	}
	dist := map[string]int{start: 0}
	queue := []string{start}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, i := range byFrom[n] {
			e := &edges[i]
			if e.Depth != 0 {
				continue
			}
			e.Depth = dist[n] + 1
			if _, seen := dist[to(e)]; !seen {
				dist[to(e)] = e.Depth
				queue = append(queue, to(e))
			}
		}
	}
	out := make([]Edge, 0, len(edges))
	cut := false
	for _, e := range edges {
		if e.Depth == 0 || e.Depth > maxDepth {
			// Unreached edges cannot come from a store walk; deeper ones
			// are past the bound.
			cut = cut || e.Depth > maxDepth
			continue
		}
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b Edge) int { return a.Depth - b.Depth })
	return out, cut
}

// artifactsOf returns the logged artifacts among the edges' nodes.
func (c *Catalog) artifactsOf(ctx context.Context, edges []Edge) ([]Listed, error) {
	digests := map[string]bool{}
	for _, e := range edges {
		digests[e.Artifact.Digest] = true
		if strings.HasPrefix(e.Dependency.Key, "sha256:") {
			digests[e.Dependency.Key] = true
		}
	}
	if len(digests) == 0 {
		return nil, nil
	}
	list, err := c.store.LoggedArtifactsByDigests(ctx, slices.Sorted(maps.Keys(digests)))
	if err != nil {
		return nil, unavailable("look up lineage artifacts", err)
	}
	return list, nil
}

// LineagePath returns a shortest dependency path of at most maxDepth edges
// (0: MaxLineageDepth) between from and to: down, if to was built from
// from (transitively), else up, if from was built from to. The edges are
// in order from from; none means there is no such path within the bounds.
func (c *Catalog) LineagePath(ctx context.Context, from, to string, maxDepth int) (edges []Edge, down bool, err error) {
	if err := validNode("from", from); err != nil {
		return nil, false, err
	}
	if err := validNode("to", to); err != nil {
		return nil, false, err
	}
	for _, dir := range []Direction{Down, Up} {
		res, err := c.Lineage(ctx, from, dir, maxDepth)
		if err != nil {
			return nil, false, err
		}
		if p := pathTo(from, to, dir, res.Edges); p != nil {
			return p, dir == Down, nil
		}
	}
	return nil, false, nil
}

// pathTo finds a shortest path from start to goal among edges that carry
// their breadth-first depths from start.
func pathTo(start, goal string, dir Direction, edges []Edge) []Edge {
	if start == goal {
		return nil
	}
	from := func(e *Edge) string { return e.Artifact.Digest }
	to := func(e *Edge) string { return e.Dependency.Key }
	if dir == Down {
		from, to = to, from
	}
	// The parent edge of every node, the first found in depth order.
	parent := map[string]int{}
	for i := range edges {
		if n := to(&edges[i]); n != start {
			if _, ok := parent[n]; !ok {
				parent[n] = i
			}
		}
	}
	if _, ok := parent[goal]; !ok {
		return nil
	}
	var rev []Edge
	for n := goal; n != start; {
		i := parent[n]
		rev = append(rev, edges[i])
		n = from(&edges[i])
		if len(rev) > len(edges) {
			return nil // cannot happen with BFS depths; never loop
		}
	}
	slices.Reverse(rev)
	return rev
}

// EnvelopeDependencies returns the lineage edges of an envelope's
// provenance: one that validateEnvelope accepted, or a stored one (store
// migrations fill the edges of artifacts recorded before the catalog kept
// them). It returns nil if there are none or the envelope does not parse:
// such a record has no edges rather than stopping the catalog.
func EnvelopeDependencies(envelope []byte) []Dependency {
	env, err := attest.ParseEnvelope(envelope)
	if err != nil {
		return nil
	}
	st, err := attest.ParseStatement(env.Payload)
	if err != nil {
		return nil
	}
	a, err := st.Artifact()
	if err != nil {
		return nil
	}
	return dependenciesOf(a.Dependencies)
}
