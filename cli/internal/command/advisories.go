package command

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/custody-dev/custody/libs/advisory"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/tlog"
)

// maxBatchBytes bounds the documents of one ImportAdvisories message, under
// the catalog's 4 MiB message limit with room for framing; a single
// document (at most advisory.MaxDocBytes) always fits.
const maxBatchBytes = 3 << 20

// advisoriesCmd is custody advisories import|show (decisions 0077, 0081).
func (c *cli) advisoriesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "advisories",
		Short: "Import OSV vulnerability advisories into the catalog, or show one",
	}
	var importJSON, showJSON bool
	imp := &cobra.Command{
		Use:   "import PATH",
		Short: "Import the OSV advisories of a directory or an OSV export zip (all.zip of <id>.json); logged as one event (a security identity or an admin)",
		Long: `Import reads PATH, a directory of <id>.json files or a zip in the layout of
OSV's per-ecosystem exports, checks every document and its bounds here
(docs/decisions/0080-advisory-bounds.md), and streams the set to the catalog,
which checks it again, stores it and logs one advisories.imported entry
naming the set's digest, its size and the ids it added or changed. Importing
the same set again changes nothing and logs nothing. Only security
identities (/security/*) and admins may import; in dev the default is
--as admin.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			env, err := c.env(ctx, "admin")
			if err != nil {
				return err
			}
			defer env.Close()
			cc, err := env.Dial("catalog")
			if err != nil {
				return err
			}
			defer cc.Close()
			resp, err := importAdvisories(ctx, catalogv1.NewCatalogServiceClient(cc), args[0])
			if err != nil {
				return err
			}
			if importJSON {
				c.printProto(resp)
				return nil
			}
			verb := "IMPORTED"
			if !resp.GetCreated() {
				verb = "ALREADY IMPORTED"
			}
			fmt.Fprintf(c.stdout, "%s %d advisories as %s (log index %d)\n", verb, resp.GetCount(), resp.GetSetDigest(), resp.GetEntry().GetIndex())
			fmt.Fprintf(c.stdout, "  added %d, updated %d, unchanged %d\n", resp.GetAdded(), resp.GetUpdated(), resp.GetUnchanged())
			return nil
		},
	}
	imp.Flags().BoolVar(&importJSON, "json", false, "print the response as JSON (docs/cli-json.md)")
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a stored advisory: severity, packages, and with --json its OSV document",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cat, _, done, err := c.catalogClient(cmd.Context(), false)
			if err != nil {
				return err
			}
			defer done()
			resp, err := cat.GetAdvisory(cmd.Context(), &catalogv1.GetAdvisoryRequest{Id: args[0]})
			if err != nil {
				return fmt.Errorf("advisory %s: %w", args[0], err)
			}
			if showJSON {
				c.printProto(resp)
				return nil
			}
			a, err := advisory.Parse(resp.GetDocument())
			if err != nil {
				return fmt.Errorf("advisory %s as stored: %w", args[0], err)
			}
			fmt.Fprintf(c.stdout, "%s %s%s\n", a.ID, resp.GetSeverity(), map[bool]string{true: " (withdrawn)"}[resp.GetWithdrawn()])
			if s := a.OSV.GetSummary(); s != "" {
				fmt.Fprintf(c.stdout, "  %s\n", s)
			}
			for _, p := range a.Packages() {
				fmt.Fprintf(c.stdout, "  %s %s\n", p.Ecosystem, p.Name)
			}
			fmt.Fprintf(c.stdout, "  modified %s, imported in %s\n", resp.GetModified().AsTime().Format("2006-01-02"), resp.GetSetDigest())
			return nil
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print the advisory as JSON (docs/cli-json.md)")
	cmd.AddCommand(imp, show)
	return cmd
}

// importAdvisories reads path with libs/advisory and streams its documents
// to the catalog in batches of at most maxBatchBytes.
func importAdvisories(ctx context.Context, cat catalogv1.CatalogServiceClient, path string) (*catalogv1.ImportAdvisoriesResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cat.ImportAdvisories(ctx)
	if err != nil {
		return nil, fmt.Errorf("import advisories: %w", err)
	}
	var (
		batch [][]byte
		size  int
		sent  = errors.New("the catalog closed the stream")
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := stream.Send(&catalogv1.ImportAdvisoriesRequest{Documents: batch}); err != nil {
			return sent
		}
		batch, size = nil, 0
		return nil
	}
	err = advisory.Read(path, func(a *advisory.Advisory) error {
		if size+len(a.Raw) > maxBatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		batch, size = append(batch, a.Raw), size+len(a.Raw)
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil && !errors.Is(err, sent) {
		// Cancelling the stream tells the catalog the set is incomplete:
		// it stores and logs nothing.
		return nil, fmt.Errorf("import advisories from %s: %w", path, err)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, fmt.Errorf("import advisories from %s: %w", path, err)
	}
	if le, err := tlog.ParseEntry(resp.GetEntry().GetLeaf()); err != nil || le.Type != tlog.TypeAdvisoriesImported || le.Subject.Digest != resp.GetSetDigest() {
		return nil, fmt.Errorf("import advisories from %s: the catalog's entry is not an advisories.imported entry about %s", path, resp.GetSetDigest())
	}
	return resp, nil
}
