package command

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	libdigest "github.com/custody-dev/custody/libs/digest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/trustroot"
)

// maxLineageResponse bounds the lineage answer the CLI accepts: the catalog
// returns at most 10,000 edges, about 440 bytes each with artifact
// dependencies and up to a few kilobytes with long URIs and deployments,
// more than gRPC's default 4 MiB (a tree of 10,000 artifacts was refused).
const maxLineageResponse = 64 << 20

func (c *cli) lineageCmd() *cobra.Command {
	var (
		up, down, asJSON bool
		path             string
		depth            int32
	)
	cmd := &cobra.Command{
		Use:   "lineage DIGEST|NAME@VERSION [--up|--down] [--path OTHER]",
		Short: "What an artifact was built from (--up, the default) or what was built from it and where it runs (--down), as a tree",
		Long: `Lineage walks the dependency graph the catalog keeps from the resolved
dependencies of signed provenance: --up lists the ancestors (what went into
the node, transitively), --down the descendants (the logged artifacts built
from it, transitively) and their deployments. --path OTHER prints a shortest
dependency path between the two nodes instead. A node is a digest, a
NAME@VERSION (resolved through its verified evidence), or a dependency
node such as gitCommit:<hex> or uri:<uri>. The edges are the builders'
claims as the catalog recorded them; custody inventory and audit verify the
signed records they come from.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if up && down {
				return errBothDirections
			}
			if path != "" && (up || down) {
				return fmt.Errorf("--path finds a path in either direction: drop --up/--down")
			}
			ctx := cmd.Context()
			needTrust := isNameVersion(args[0]) || isNameVersion(path)
			cat, root, done, err := c.catalogClient(ctx, needTrust)
			if err != nil {
				return err
			}
			defer done()
			from, err := lineageNode(ctx, cat, root, args[0])
			if err != nil {
				return err
			}
			if path != "" {
				to, err := lineageNode(ctx, cat, root, path)
				if err != nil {
					return err
				}
				resp, err := cat.GetLineagePath(ctx, &catalogv1.GetLineagePathRequest{From: from, To: to, MaxDepth: depth},
					grpc.MaxCallRecvMsgSize(maxLineageResponse))
				if err != nil {
					return fmt.Errorf("lineage path %s → %s: %w", from, to, err)
				}
				out := pathJSON(from, to, resp)
				if asJSON {
					return printJSON(c.stdout, out)
				}
				printPath(c.stdout, out)
				return nil
			}
			dir := catalogv1.LineageDirection_LINEAGE_DIRECTION_UP
			if down {
				dir = catalogv1.LineageDirection_LINEAGE_DIRECTION_DOWN
			}
			resp, err := cat.GetLineage(ctx, &catalogv1.GetLineageRequest{Node: from, Direction: dir, MaxDepth: depth},
				grpc.MaxCallRecvMsgSize(maxLineageResponse))
			if err != nil {
				return fmt.Errorf("lineage of %s: %w", from, err)
			}
			out := lineageJSON(from, down, resp)
			if asJSON {
				return printJSON(c.stdout, out)
			}
			printTree(c.stdout, out)
			return nil
		},
	}
	cmd.Flags().BoolVar(&up, "up", false, "ancestors: what it was built from (the default)")
	cmd.Flags().BoolVar(&down, "down", false, "descendants: what was built from it, and their deployments")
	cmd.Flags().StringVar(&path, "path", "", "print a shortest dependency path to this node instead")
	cmd.Flags().Int32Var(&depth, "depth", 0, "at most this many edges from the node (default and maximum 64)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the lineage as JSON (docs/cli-json.md)")
	return cmd
}

// isNameVersion says whether ref is to be resolved as NAME@VERSION rather
// than used as a graph node.
func isNameVersion(ref string) bool {
	if ref == "" || strings.HasPrefix(ref, libdigest.Prefix) || strings.HasPrefix(ref, "uri:") {
		return false
	}
	before, _, _ := strings.Cut(ref, "@")
	return !strings.Contains(before, ":")
}

// lineageNode turns an argument into a graph node: NAME@VERSION is
// resolved to its digest through verified evidence; anything else is sent
// as it is, and the catalog checks it.
func lineageNode(ctx context.Context, cat catalogv1.CatalogServiceClient, root *trustroot.Root, ref string) (string, error) {
	if !isNameVersion(ref) {
		if strings.HasPrefix(ref, libdigest.Prefix) {
			if _, err := libdigest.Parse(ref); err != nil {
				return "", err
			}
		}
		return ref, nil
	}
	return resolveDigest(ctx, cat, root, ref)
}

func lineageJSON(node string, down bool, resp *catalogv1.GetLineageResponse) *jsonLineage {
	out := &jsonLineage{Node: node, Direction: "up", Edges: []jsonEdge{}, Artifacts: []jsonArtifact{}, Deployments: []jsonDeployment{}, Truncated: resp.GetTruncated()}
	if down {
		out.Direction = "down"
	}
	for _, e := range resp.GetEdges() {
		out.Edges = append(out.Edges, edgeJSON(e))
	}
	for _, a := range resp.GetArtifacts() {
		out.Artifacts = append(out.Artifacts, artifactJSON(a, ""))
	}
	for _, d := range resp.GetDeployments() {
		out.Deployments = append(out.Deployments, deploymentJSON(d))
	}
	return out
}

func pathJSON(from, to string, resp *catalogv1.GetLineagePathResponse) *jsonLineagePath {
	out := &jsonLineagePath{From: from, To: to, Found: len(resp.GetEdges()) > 0, Downward: resp.GetDownward(), Edges: []jsonEdge{}}
	for _, e := range resp.GetEdges() {
		out.Edges = append(out.Edges, edgeJSON(e))
	}
	return out
}

// shortNode abbreviates a digest node for a terminal.
func shortNode(node string) string {
	if algo, hex, ok := strings.Cut(node, ":"); ok && algo != "uri" && len(hex) > 16 {
		return algo + ":" + hex[:12] + "…"
	}
	return node
}

// labels names each node: name@version for artifacts, the dependency's
// name or URI otherwise.
func labels(out *jsonLineage) map[string]string {
	l := map[string]string{}
	for _, e := range out.Edges {
		if e.Name != "" {
			l[e.Dependency] = e.Name
		} else if e.URI != "" && !strings.HasPrefix(e.Dependency, "uri:") {
			l[e.Dependency] = e.URI
		}
	}
	for _, e := range out.Edges {
		l[e.ArtifactDigest] = e.ArtifactName + "@" + e.ArtifactVersion
	}
	for _, a := range out.Artifacts {
		l[a.Digest] = a.Name + "@" + a.Version
	}
	return l
}

func nodeLabel(l map[string]string, node string) string {
	if name, ok := l[node]; ok && name != "" {
		return name + " (" + shortNode(node) + ")"
	}
	return shortNode(node)
}

// printTree draws the lineage as a tree from its node: each node's subtree
// once; a node reached again is marked, and a cycle (a builder's claim)
// too.
func printTree(w io.Writer, out *jsonLineage) {
	children := map[string][]string{}
	for _, e := range out.Edges {
		parent, child := e.ArtifactDigest, e.Dependency
		if out.Direction == "down" {
			parent, child = e.Dependency, e.ArtifactDigest
		}
		children[parent] = appendOnce(children[parent], child)
	}
	for _, c := range children {
		sort.Strings(c)
	}
	deployed := map[string][]jsonDeployment{}
	for _, d := range out.Deployments {
		deployed[d.Digest] = append(deployed[d.Digest], d)
	}
	l := labels(out)
	shown := map[string]bool{}
	onPath := map[string]bool{}
	var walk func(node, prefix string)
	walk = func(node, prefix string) {
		shown[node], onPath[node] = true, true
		defer delete(onPath, node)
		type line struct {
			text  string
			child string
		}
		var lines []line
		for _, d := range deployed[node] {
			lines = append(lines, line{text: "deployed to " + d.Environment + " at " + d.DeployedAt.Format("2006-01-02T15:04:05Z07:00")})
		}
		for _, c := range children[node] {
			lines = append(lines, line{child: c})
		}
		for i, ln := range lines {
			branch, next := "├── ", "│   "
			if i == len(lines)-1 {
				branch, next = "└── ", "    "
			}
			switch {
			case ln.child == "":
				fmt.Fprintln(w, prefix+branch+ln.text)
			case onPath[ln.child]:
				fmt.Fprintln(w, prefix+branch+nodeLabel(l, ln.child)+" (cycle: claimed to be built from itself)")
			case shown[ln.child]:
				fmt.Fprintln(w, prefix+branch+nodeLabel(l, ln.child)+" (shown above)")
			default:
				fmt.Fprintln(w, prefix+branch+nodeLabel(l, ln.child))
				walk(ln.child, prefix+next)
			}
		}
	}
	fmt.Fprintln(w, nodeLabel(l, out.Node))
	walk(out.Node, "")
	what := "ancestors"
	if out.Direction == "down" {
		what = "descendants"
	}
	if len(out.Edges) == 0 {
		fmt.Fprintf(w, "no %s recorded\n", what)
	}
	if out.Truncated {
		fmt.Fprintf(w, "(cut short: more %s than the walk's bounds; use --depth or start lower)\n", what)
	}
}

func printPath(w io.Writer, out *jsonLineagePath) {
	if !out.Found {
		fmt.Fprintf(w, "no dependency path between %s and %s within the depth bound\n", shortNode(out.From), shortNode(out.To))
		return
	}
	l := labels(&jsonLineage{Edges: out.Edges})
	fmt.Fprintln(w, nodeLabel(l, out.From))
	for _, e := range out.Edges {
		// Each edge is stored as artifact built from dependency.
		if out.Downward {
			fmt.Fprintln(w, "  ↓ built into")
			fmt.Fprintln(w, nodeLabel(l, e.ArtifactDigest))
		} else {
			fmt.Fprintln(w, "  ↑ built from")
			fmt.Fprintln(w, nodeLabel(l, e.Dependency))
		}
	}
}
