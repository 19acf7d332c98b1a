package command

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/custody-dev/custody/libs/advisory"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/verify"
	"github.com/custody-dev/custody/libs/vex"
)

// jsonVEXEntry is one verified vex.added entry, as custody vex list
// --json prints it (docs/cli-json.md).
type jsonVEXEntry struct {
	LogIndex   int64              `json:"log_index"`
	Time       time.Time          `json:"time"`
	Actor      string             `json:"actor"`
	DocumentID string             `json:"document_id"`
	Statements []jsonVEXStatement `json:"statements"`
}

type jsonVEXStatement struct {
	Vulnerability   string   `json:"vulnerability"`
	Aliases         []string `json:"aliases,omitempty"`
	Status          string   `json:"status"`
	Justification   string   `json:"justification,omitempty"`
	ImpactStatement string   `json:"impact_statement,omitempty"`
	Subcomponents   []string `json:"subcomponents,omitempty"`
}

// jsonSuppressed is one finding a verified not_affected VEX statement
// suppresses, as custody findings --json prints it.
type jsonSuppressed struct {
	Advisory      string `json:"advisory"`
	Component     string `json:"component"`
	LogIndex      int64  `json:"vex_log_index"`
	Statement     int    `json:"statement"`
	Actor         string `json:"actor"`
	Justification string `json:"justification,omitempty"`
	Impact        string `json:"impact_statement,omitempty"`
}

// vexCmd is custody vex add|list (decisions 0095, 0096).
func (c *cli) vexCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vex",
		Short: "Say that an advisory does not affect one artifact (OpenVEX), or list what was said",
	}
	var addJSON, listJSON bool
	add := &cobra.Command{
		Use:   "add FILE NAME@VERSION|DIGEST",
		Short: "Log an OpenVEX v0.2.0 document about one artifact (a security identity only)",
		Long: `Add checks FILE, an OpenVEX v0.2.0 JSON document (at most 32 KiB, every
statement naming the artifact's digest among its products: "@id": "sha256:…",
hashes.sha-256, or a purl whose version is the digest), and has the catalog
log it as one vex.added entry about the artifact, with you as its actor.
A not_affected statement (with a justification or an impact_statement)
whose vulnerability name or alias is an advisory's id or alias suppresses
that advisory for this artifact only, at the next admission; a later
affected, fixed or under_investigation statement takes it back. Only
security identities (/security/*) may add VEX, not admins; in dev the
default is --as security.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if _, err := vex.Parse(b); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			name, version, dgst, err := parseRef(args[1])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			env, err := c.env(ctx, "security")
			if err != nil {
				return err
			}
			defer env.Close()
			cc, err := env.Dial("catalog")
			if err != nil {
				return err
			}
			defer cc.Close()
			resp, err := catalogv1.NewCatalogServiceClient(cc).AddVex(ctx, &catalogv1.AddVexRequest{Name: name, Version: version, Digest: dgst, Document: b})
			if err != nil {
				return fmt.Errorf("vex add: %w", err)
			}
			if addJSON {
				c.printProto(resp)
				return nil
			}
			fmt.Fprintf(c.stdout, "LOGGED VEX for %s@%s (%s): %d statements, log index %d\n",
				resp.GetName(), resp.GetVersion(), resp.GetDigest(), resp.GetStatements(), resp.GetEntry().GetIndex())
			return nil
		},
	}
	add.Flags().BoolVar(&addJSON, "json", false, "print the response as JSON (docs/cli-json.md)")
	list := &cobra.Command{
		Use:   "list NAME@VERSION|DIGEST",
		Short: "List the VEX documents logged about an artifact, each verified against the trust root",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cat, root, done, err := c.catalogClient(ctx, true)
			if err != nil {
				return err
			}
			defer done()
			a, entries, truncated, err := verifiedVEX(ctx, cat, root, args[0])
			if err != nil {
				return err
			}
			out := struct {
				Name       string         `json:"name"`
				Version    string         `json:"version"`
				Digest     string         `json:"digest"`
				Entries    []jsonVEXEntry `json:"entries"`
				Truncated  bool           `json:"truncated"`
				TrustRootV int64          `json:"trust_root_version"`
			}{Name: a.Name, Version: a.Version, Digest: a.Digest, Entries: entries, Truncated: truncated, TrustRootV: root.Version}
			if listJSON {
				return printJSON(c.stdout, out)
			}
			printVEX(c.stdout, a, entries, truncated)
			return nil
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print the entries as JSON (docs/cli-json.md)")
	cmd.AddCommand(add, list)
	return cmd
}

// verifiedVEX reads the artifact ref names (its evidence verified against
// root) and its vex.added entries, each verified by libs/verify's VEX check,
// the gatekeeper's.
func verifiedVEX(ctx context.Context, cat catalogv1.CatalogServiceClient, root *trustroot.Root, ref string) (verify.Artifact, []jsonVEXEntry, bool, error) {
	a, raw, truncated, err := readVEX(ctx, cat, root, ref)
	if err != nil {
		return verify.Artifact{}, nil, false, err
	}
	out := make([]jsonVEXEntry, 0, len(raw))
	for _, v := range raw {
		je := jsonVEXEntry{LogIndex: v.entry.Index, Time: v.time, Actor: v.entry.Actor, DocumentID: v.entry.Document.ID, Statements: []jsonVEXStatement{}}
		for _, s := range v.entry.Document.Statements {
			js := jsonVEXStatement{Vulnerability: s.Vulnerability.Name, Aliases: s.Vulnerability.Aliases, Status: string(s.Status),
				Justification: s.Justification, ImpactStatement: s.ImpactStatement}
			for _, p := range s.Products {
				if p.Names(a.Digest) {
					for _, sc := range p.Subcomponents {
						js.Subcomponents = append(js.Subcomponents, sc.ID+sc.Identifiers["purl"])
					}
				}
			}
			je.Statements = append(je.Statements, js)
		}
		out = append(out, je)
	}
	return a, out, truncated, nil
}

type readEntry struct {
	entry vex.Entry
	time  time.Time
}

// readVEX resolves ref to a verified artifact record and returns its
// verified VEX entries.
func readVEX(ctx context.Context, cat catalogv1.CatalogServiceClient, root *trustroot.Root, ref string) (verify.Artifact, []readEntry, bool, error) {
	name, version, dgst, err := parseRef(ref)
	if err != nil {
		return verify.Artifact{}, nil, false, err
	}
	ar, err := cat.GetArtifact(ctx, &catalogv1.GetArtifactRequest{Name: name, Version: version, Digest: dgst})
	if err != nil {
		return verify.Artifact{}, nil, false, fmt.Errorf("look up %s: %w", ref, err)
	}
	ev := verify.FromProto(ar)
	if err := verify.Check(ev, root, verify.Options{Want: verify.Want{Name: name, Version: version, Digest: dgst}}).Err(); err != nil {
		return verify.Artifact{}, nil, false, denied("%v", err)
	}
	a := ev.Artifact
	resp, err := cat.ListVex(ctx, &catalogv1.ListVexRequest{Name: a.Name, Version: a.Version})
	if err != nil {
		return verify.Artifact{}, nil, false, fmt.Errorf("list the VEX about %s@%s: %w", a.Name, a.Version, err)
	}
	logged := make([]verify.LogEntry, len(resp.GetEntries()))
	for i, e := range resp.GetEntries() {
		logged[i] = verify.EntryFromProto(e)
	}
	entries, err := verify.VEX(logged, a, root)
	if err != nil {
		return verify.Artifact{}, nil, false, denied("%v", err)
	}
	out := make([]readEntry, len(entries))
	for i, e := range entries {
		out[i].entry = e
		if le, err := tlog.ParseEntry(logged[i].Leaf); err == nil {
			out[i].time = le.Time
		}
	}
	return a, out, resp.GetTruncated(), nil
}

func printVEX(w io.Writer, a verify.Artifact, entries []jsonVEXEntry, truncated bool) {
	if len(entries) == 0 {
		fmt.Fprintf(w, "no VEX about %s@%s (%s)\n", a.Name, a.Version, a.Digest)
	}
	for _, e := range entries {
		fmt.Fprintf(w, "VEX log index %d by %s at %s (%s)\n", e.LogIndex, e.Actor, e.Time.UTC().Format(time.RFC3339), e.DocumentID)
		for _, s := range e.Statements {
			why := s.Justification
			if s.ImpactStatement != "" {
				why += " " + s.ImpactStatement
			}
			fmt.Fprintf(w, "  %s %s %s\n", s.Status, s.Vulnerability, why)
		}
	}
	if truncated {
		fmt.Fprintln(w, "(truncated: more than 100 entries; the gatekeeper denies such an artifact)")
	}
}

// suppressFindings marks the findings of an artifact that its verified
// not_affected VEX statements suppress, as the gatekeeper would: each
// advisory's aliases come from its stored document.
func suppressFindings(ctx context.Context, cat catalogv1.CatalogServiceClient, root *trustroot.Root, ref string, fs []*catalogv1.Finding) (kept []*catalogv1.Finding, suppressed []jsonSuppressed, err error) {
	if len(fs) == 0 {
		return fs, nil, nil
	}
	a, raw, truncated, err := readVEX(ctx, cat, root, ref)
	if err != nil {
		return nil, nil, err
	}
	if truncated {
		return nil, nil, denied("more than 100 VEX entries about %s@%s: the gatekeeper denies it", a.Name, a.Version)
	}
	entries := make([]vex.Entry, len(raw))
	for i, r := range raw {
		entries[i] = r.entry
	}
	aliases := map[string][]string{}
	for _, f := range fs {
		id := f.GetAdvisoryId()
		if _, ok := aliases[id]; ok || len(entries) == 0 {
			continue
		}
		r, err := cat.GetAdvisory(ctx, &catalogv1.GetAdvisoryRequest{Id: id})
		if err != nil {
			return nil, nil, fmt.Errorf("advisory %s: %w", id, err)
		}
		adv, err := advisory.Parse(r.GetDocument())
		if err != nil {
			return nil, nil, fmt.Errorf("advisory %s: %w", id, err)
		}
		aliases[id] = adv.OSV.GetAliases()
	}
	for _, f := range fs {
		m := advisory.Match{Advisory: f.GetAdvisoryId(), Component: sbom.Component{PURL: f.GetComponent().GetPurl()}, Aliases: aliases[f.GetAdvisoryId()]}
		_, sup := vex.Apply([]advisory.Match{m}, a.Digest, entries)
		if len(sup) == 0 {
			kept = append(kept, f)
			continue
		}
		s := sup[0]
		suppressed = append(suppressed, jsonSuppressed{Advisory: m.Advisory, Component: m.Component.PURL, LogIndex: s.Index,
			Statement: s.Statement, Actor: s.Actor, Justification: s.Justification, Impact: s.ImpactStatement})
	}
	return kept, suppressed, nil
}
