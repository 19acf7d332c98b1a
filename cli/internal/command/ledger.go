package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/verify"
)

// Bounds on what the ledger commands hold from one catalog answer stream.
const (
	// maxAuditEvents bounds the events custody audit collects about one
	// digest; beyond it the command fails rather than grow without end.
	maxAuditEvents = 100_000
	// maxInventory bounds the artifacts custody inventory walks.
	maxInventory = 1_000_000
)

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// catalogClient opens the environment (as auditor unless --as), its trust
// root and a catalog client; close the returned func when done.
func (c *cli) catalogClient(ctx context.Context, needTrust bool) (catalogv1.CatalogServiceClient, *trustroot.Root, func(), error) {
	env, err := c.env(ctx, "auditor")
	if err != nil {
		return nil, nil, nil, err
	}
	var root *trustroot.Root
	if needTrust {
		trust, err := env.Trust(ctx)
		if err != nil {
			env.Close()
			return nil, nil, nil, err
		}
		root = trust.Root
	}
	cc, err := env.Dial("catalog")
	if err != nil {
		env.Close()
		return nil, nil, nil, err
	}
	return catalogv1.NewCatalogServiceClient(cc), root, func() { cc.Close(); env.Close() }, nil
}

// resolveDigest turns NAME@VERSION or a digest into a digest. A name is
// resolved through the catalog's evidence, verified against root, so the
// binding of name@version to the digest is the signed one.
func resolveDigest(ctx context.Context, cat catalogv1.CatalogServiceClient, root *trustroot.Root, ref string) (string, error) {
	name, version, digest, err := parseRef(ref)
	if err != nil {
		return "", err
	}
	if digest != "" {
		return digest, nil
	}
	resp, err := cat.GetArtifact(ctx, &catalogv1.GetArtifactRequest{Name: name, Version: version})
	if err != nil {
		return "", fmt.Errorf("look up %s@%s: %w", name, version, err)
	}
	ev := verify.FromProto(resp)
	if err := verify.Check(ev, root, verify.Options{Want: verify.Want{Name: name, Version: version}}).Err(); err != nil {
		return "", denied("%v", err)
	}
	return ev.Artifact.Digest, nil
}

// audit lists every log entry about digest, verifying each against root:
// its checkpoint co-signed by the log key root lists, its inclusion proof,
// that it is about digest, and that the entries come in log order, each
// once. Any failure is an error naming the entry.
func audit(ctx context.Context, cat catalogv1.CatalogServiceClient, root *trustroot.Root, digest string) (*jsonAudit, error) {
	out := &jsonAudit{Digest: digest, TrustRootVersion: root.Version, Events: []jsonEvent{}}
	token, last := "", int64(-1)
	for pages := 0; ; pages++ {
		resp, err := cat.ListEvents(ctx, &catalogv1.ListEventsRequest{SubjectDigest: digest, PageToken: token})
		if err != nil {
			return nil, fmt.Errorf("list the events about %s: %w", digest, err)
		}
		if len(resp.GetEntries()) == 0 && resp.GetNextPageToken() != "" {
			return nil, denied("the catalog answered an empty page of events about %s with a next page: refusing to loop", digest)
		}
		for _, pe := range resp.GetEntries() {
			e := verify.EntryFromProto(pe)
			entry, cp, err := verify.Entry(e, root)
			if err != nil {
				return nil, denied("audit %s: %v", digest, err)
			}
			if entry.Subject.Digest != digest {
				return nil, denied("audit %s: log entry %d (%s) is about %q, not %s: the catalog's answer is wrong", digest, e.Index, entry.Type, entry.Subject.Digest, digest)
			}
			if e.Index <= last {
				return nil, denied("audit %s: log entry %d comes after entry %d: the catalog's answer is not in log order or repeats an entry", digest, e.Index, last)
			}
			last = e.Index
			if len(out.Events) >= maxAuditEvents {
				return nil, fmt.Errorf("audit %s: more than %d events; this command holds at most that many", digest, maxAuditEvents)
			}
			out.Events = append(out.Events, jsonEvent{Index: e.Index, Type: entry.Type, Actor: entry.Actor, Time: entry.Time.UTC(),
				Subject:        jsonSubject{Name: entry.Subject.Name, Version: entry.Subject.Version, Digest: entry.Subject.Digest},
				EnvelopeSHA256: entry.EnvelopeSHA256, Details: entry.Details, TreeSize: cp.Size})
		}
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

func (c *cli) auditCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "audit NAME@VERSION|DIGEST",
		Short: "Every logged event about an artifact, in log order, each proved included in the co-signed log (as auditor)",
		Long: `Audit lists every log entry about the artifact's digest: publications,
re-signatures, approvals, admissions and the other events whose subject it
is, with type, actor (SPIFFE ID), time and log index. Each entry is checked
here against its inclusion proof and a checkpoint co-signed by the log key
of the pinned trust root; an entry that does not verify is an error (exit 1)
naming it. The proofs show each entry is in the log; they do not show that
the catalog left none out.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cat, root, done, err := c.catalogClient(ctx, true)
			if err != nil {
				return err
			}
			defer done()
			digest, err := resolveDigest(ctx, cat, root, args[0])
			if err != nil {
				return err
			}
			rep, err := audit(ctx, cat, root, digest)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(c.stdout, rep)
			}
			printAudit(c.stdout, args[0], rep)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the events as JSON (docs/cli-json.md)")
	return cmd
}

func printAudit(w io.Writer, ref string, rep *jsonAudit) {
	fmt.Fprintf(w, "%s (%s): %d events, each included in a checkpoint co-signed by the log key of trust root v%d\n", ref, rep.Digest, len(rep.Events), rep.TrustRootVersion)
	for _, e := range rep.Events {
		subject := ""
		if e.Subject.Name != "" {
			subject = " " + e.Subject.Name + "@" + e.Subject.Version
		}
		fmt.Fprintf(w, "  #%-6d %s  %-26s %s%s\n", e.Index, e.Time.Format("2006-01-02T15:04:05Z07:00"), e.Type, e.Actor, subject)
	}
}

// searchFlags are the filters custody search and inventory share.
type searchFlags struct {
	req        catalogv1.SearchArtifactsRequest
	keyVersion string
}

func (f *searchFlags) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.req.Name, "name", "", "artifact name")
	fl.StringVar(&f.req.Version, "version", "", "artifact version")
	fl.StringVar(&f.req.Digest, "digest", "", "artifact digest, sha256:<hex>")
	fl.StringVar(&f.req.BuilderId, "builder", "", "builder SPIFFE ID, e.g. spiffe://<td>/builder/ci")
	fl.StringVar(&f.req.SourceRepo, "source-repo", "", "source repository as the provenance records it")
	fl.StringVar(&f.req.SourceCommit, "commit", "", "source commit")
	fl.StringVar(&f.req.Channel, "channel", "", "release channel")
	fl.StringVar(&f.req.SignedByKeyId, "key-id", "", "key id of the key version that signed the current envelope")
	fl.StringVar(&f.keyVersion, "key-version", "", "signing key version NAME@N (e.g. artifact@2), looked up in the trust root")
	fl.StringVar(&f.req.DeployedEnvironment, "env", "", "only artifacts deployed at least once to this environment")
}

// request returns the search request; root is needed only with
// --key-version.
func (f *searchFlags) request(root *trustroot.Root) (*catalogv1.SearchArtifactsRequest, error) {
	req := &catalogv1.SearchArtifactsRequest{Name: f.req.Name, Version: f.req.Version, Digest: f.req.Digest, BuilderId: f.req.BuilderId,
		SourceRepo: f.req.SourceRepo, SourceCommit: f.req.SourceCommit, Channel: f.req.Channel, SignedByKeyId: f.req.SignedByKeyId,
		DeployedEnvironment: f.req.DeployedEnvironment}
	if f.keyVersion == "" {
		return req, nil
	}
	id, err := keyIDOf(root, f.keyVersion)
	if err != nil {
		return nil, err
	}
	if req.SignedByKeyId != "" && req.SignedByKeyId != id {
		return nil, fmt.Errorf("--key-id %s and --key-version %s (key id %s) name different keys: give one", req.SignedByKeyId, f.keyVersion, id)
	}
	req.SignedByKeyId = id
	return req, nil
}

// keyIDOf finds the artifact key version NAME@N in root.
func keyIDOf(root *trustroot.Root, nameVersion string) (string, error) {
	name, v, ok := strings.Cut(nameVersion, "@")
	var n int
	if _, err := fmt.Sscanf(v, "%d", &n); !ok || name == "" || err != nil || fmt.Sprint(n) != v {
		return "", fmt.Errorf("--key-version %q: want NAME@N, e.g. artifact@2", nameVersion)
	}
	for _, k := range root.SigningKeys {
		if k.Name == name && k.Version == n {
			return k.ID, nil
		}
	}
	return "", fmt.Errorf("--key-version %s: trust root v%d lists no key %s version %d (custody keys list shows the versions)", nameVersion, root.Version, name, n)
}

func (c *cli) searchCmd() *cobra.Command {
	var (
		f      searchFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "search [filters]",
		Short: "Find logged artifacts by name, version, digest, builder, source, channel, signing key or deployment (one page)",
		Long: `Search returns the logged artifacts that match every filter given (exact
matches; none given matches every artifact), in the order they were
recorded, one page of at most --limit at a time. Pass the printed next
page token to --page-token with the same filters for the next page. Search
shows what the catalog records; custody inventory verifies it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cat, root, done, err := c.catalogClient(ctx, f.keyVersion != "")
			if err != nil {
				return err
			}
			defer done()
			req, err := f.request(root)
			if err != nil {
				return err
			}
			req.PageSize, req.PageToken = f.req.PageSize, f.req.PageToken
			resp, err := cat.SearchArtifacts(ctx, req)
			if err != nil {
				return fmt.Errorf("search: %w", err)
			}
			out := searchJSON(resp)
			if asJSON {
				return printJSON(c.stdout, out)
			}
			printSearch(c.stdout, out)
			return nil
		},
	}
	f.bind(cmd)
	cmd.Flags().StringVar(&f.req.PageToken, "page-token", "", "next page token printed by the previous search with the same filters")
	cmd.Flags().Int32Var(&f.req.PageSize, "limit", 0, "at most this many artifacts (default and maximum 1000)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the page as JSON (docs/cli-json.md)")
	return cmd
}

func searchJSON(resp *catalogv1.SearchArtifactsResponse) *jsonSearch {
	out := &jsonSearch{Artifacts: []jsonArtifact{}, Deployments: []jsonDeployment{}, NextPageToken: resp.GetNextPageToken()}
	for _, l := range resp.GetArtifacts() {
		out.Artifacts = append(out.Artifacts, artifactJSON(l.GetArtifact(), l.GetKeyId()))
	}
	for _, d := range resp.GetDeployments() {
		out.Deployments = append(out.Deployments, deploymentJSON(d))
	}
	return out
}

func printSearch(w io.Writer, out *jsonSearch) {
	envs := map[string][]string{}
	for _, d := range out.Deployments {
		envs[d.Digest] = appendOnce(envs[d.Digest], d.Environment)
	}
	for _, a := range out.Artifacts {
		fmt.Fprintf(w, "%s@%s  %s  channel %s  key %s  built by %s", a.Name, a.Version, a.Digest, orDash(a.Channel), orDash(a.KeyID), a.BuilderID)
		if a.SourceRepo != "" || a.SourceCommit != "" {
			fmt.Fprintf(w, " from %s@%s", orDash(a.SourceRepo), orDash(a.SourceCommit))
		}
		if e := envs[a.Digest]; len(e) > 0 {
			fmt.Fprintf(w, "  deployed to %s", strings.Join(e, ", "))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "%d artifacts", len(out.Artifacts))
	if out.NextPageToken != "" {
		fmt.Fprintf(w, "; more with --page-token %s", out.NextPageToken)
	}
	fmt.Fprintln(w)
}

func appendOnce(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// inventory walks every artifact matching req (all pages) and verifies each
// with the one verifier (verify.Check). A failed verification is
// recorded in the item, not returned: the inventory shows every artifact.
func inventory(ctx context.Context, cat catalogv1.CatalogServiceClient, root *trustroot.Root, req *catalogv1.SearchArtifactsRequest) (*jsonInventory, error) {
	out := &jsonInventory{TrustRootVersion: root.Version, Artifacts: []jsonInventoryItem{}}
	for {
		resp, err := cat.SearchArtifacts(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("list the artifacts: %w", err)
		}
		if len(resp.GetArtifacts()) == 0 && resp.GetNextPageToken() != "" {
			return nil, denied("the catalog answered an empty page of artifacts with a next page: refusing to loop")
		}
		deployed := map[string][]jsonDeployment{}
		for _, d := range resp.GetDeployments() {
			deployed[d.GetDigest()] = append(deployed[d.GetDigest()], deploymentJSON(d))
		}
		for _, l := range resp.GetArtifacts() {
			if len(out.Artifacts) >= maxInventory {
				return nil, fmt.Errorf("more than %d artifacts: narrow the inventory with filters", maxInventory)
			}
			item := inventoryItem(ctx, cat, root, l)
			item.Deployments = deployed[l.GetArtifact().GetDigest()]
			if item.Deployments == nil {
				item.Deployments = []jsonDeployment{}
			}
			if !item.Verified {
				out.Unverified++
			}
			out.Artifacts = append(out.Artifacts, item)
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			return out, nil
		}
	}
}

func inventoryItem(ctx context.Context, cat catalogv1.CatalogServiceClient, root *trustroot.Root, l *catalogv1.ListedArtifact) jsonInventoryItem {
	a := l.GetArtifact()
	item := jsonInventoryItem{Artifact: artifactJSON(a, l.GetKeyId()), LogIndex: -1}
	resp, err := cat.GetArtifact(ctx, &catalogv1.GetArtifactRequest{Name: a.GetName(), Version: a.GetVersion()})
	if err != nil {
		item.Problem = fmt.Sprintf("get the evidence: %s", message(err))
		return item
	}
	ev := verify.FromProto(resp)
	v := verify.Check(ev, root, verify.Options{Want: verify.Want{Name: a.GetName(), Version: a.GetVersion(), Digest: a.GetDigest()}})
	if err := v.Err(); err != nil {
		item.Problem = err.Error()
		return item
	}
	if l.GetKeyId() != "" && l.GetKeyId() != v.KeyID {
		item.Problem = fmt.Sprintf("the catalog lists key %s, the envelope verifies with key %s", l.GetKeyId(), v.KeyID)
		return item
	}
	k, _ := root.SigningKey(v.KeyID)
	item.Verified, item.LogIndex = true, ev.Entry.Index
	item.Key = &jsonKey{ID: v.KeyID, Name: k.Name, Version: k.Version, Status: k.Status}
	item.Provenance = &jsonProvenance{BuilderID: v.Statement.BuilderID, SourceRepo: v.Statement.SourceRepo,
		SourceCommit: v.Statement.SourceCommit, Dependencies: len(v.Statement.Dependencies)}
	return item
}

func (c *cli) inventoryCmd() *cobra.Command {
	var (
		f      searchFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "inventory [filters]",
		Short: "Every logged artifact with its signing key version, provenance and deployments, each verified (as auditor)",
		Long: `Inventory walks every logged artifact (all pages of search; the search
filters narrow it) and verifies each as custody verify does: the envelope's
signature by an artifact key of the pinned trust root, the signed statement,
the log entry and its inclusion in a co-signed checkpoint. It prints the
signing key version, the signed provenance (builder, source repository and
commit) and the recorded deployments. Any artifact that fails verification
is listed with the reason, and the command exits 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cat, root, done, err := c.catalogClient(ctx, true)
			if err != nil {
				return err
			}
			defer done()
			req, err := f.request(root)
			if err != nil {
				return err
			}
			inv, err := inventory(ctx, cat, root, req)
			if err != nil {
				return err
			}
			if asJSON {
				err = printJSON(c.stdout, inv)
			} else {
				printInventory(c.stdout, inv)
			}
			if err == nil && inv.Unverified > 0 {
				return denied("%d of %d artifacts failed verification", inv.Unverified, len(inv.Artifacts))
			}
			return err
		},
	}
	f.bind(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the inventory as JSON (docs/cli-json.md)")
	return cmd
}

func printInventory(w io.Writer, inv *jsonInventory) {
	for _, it := range inv.Artifacts {
		a := it.Artifact
		if !it.Verified {
			fmt.Fprintf(w, "FAIL %s@%s (%s): %s\n", a.Name, a.Version, a.Digest, it.Problem)
			continue
		}
		fmt.Fprintf(w, "OK   %s@%s (%s) channel %s\n", a.Name, a.Version, a.Digest, orDash(a.Channel))
		fmt.Fprintf(w, "     signed by %s v%d (%s, %s), logged at index %d\n", it.Key.Name, it.Key.Version, it.Key.ID, it.Key.Status, it.LogIndex)
		p := it.Provenance
		fmt.Fprintf(w, "     built by %s from %s@%s, %d dependencies\n", p.BuilderID, orDash(p.SourceRepo), orDash(p.SourceCommit), p.Dependencies)
		if len(it.Deployments) == 0 {
			fmt.Fprintln(w, "     deployed nowhere recorded")
		}
		for _, d := range it.Deployments {
			fmt.Fprintf(w, "     deployed to %s at %s\n", d.Environment, d.DeployedAt.Format("2006-01-02T15:04:05Z07:00"))
		}
	}
	fmt.Fprintf(w, "%d artifacts, %d verified against trust root v%d, %d failed\n", len(inv.Artifacts), len(inv.Artifacts)-inv.Unverified, inv.TrustRootVersion, inv.Unverified)
}

var errBothDirections = errors.New("--up and --down exclude each other")
