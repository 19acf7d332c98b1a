package command

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
)

// findingsCmd is custody findings NAME@VERSION|DIGEST, or --advisory ID.
func (c *cli) findingsCmd() *cobra.Command {
	var (
		asJSON bool
		id     string
	)
	cmd := &cobra.Command{
		Use:   "findings NAME@VERSION|DIGEST | --advisory ID",
		Short: "Which stored advisories affect an artifact's SBOM components, or which artifacts an advisory affects",
		Long: `Findings matches the advisories imported with custody advisories import
against the SBOMs attached to artifacts, by package URL and affected ranges in
each ecosystem's version ordering (docs/decisions/0077-advisory-libraries-and-matching.md).
With NAME@VERSION or a digest it lists the advisories that affect the
artifact's components; an artifact without an SBOM is an error, not "no
findings". With --advisory ID it lists the artifacts whose components the
advisory affects. A finding marked uncertain is a component whose version
could not be compared: it is reported rather than passed over. Exit 1 when
there are findings.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &catalogv1.ListFindingsRequest{AdvisoryId: id}
			switch {
			case id != "" && len(args) == 0:
			case id == "" && len(args) == 1:
				name, version, dgst, err := parseRef(args[0])
				if err != nil {
					return err
				}
				req.Name, req.Version, req.Digest = name, version, dgst
			default:
				return fmt.Errorf("give NAME@VERSION (or a digest) or --advisory ID, not both")
			}
			cat, _, done, err := c.catalogClient(cmd.Context(), false)
			if err != nil {
				return err
			}
			defer done()
			resp, err := cat.ListFindings(cmd.Context(), req)
			if err != nil {
				return fmt.Errorf("findings: %w", err)
			}
			if asJSON {
				c.printProto(resp)
			} else {
				printFindings(c.stdout, resp)
			}
			if len(resp.GetFindings()) > 0 {
				return &exitError{code: ExitDenied, err: fmt.Errorf("%d findings", len(resp.GetFindings()))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "advisory", "", "list the artifacts this advisory affects instead")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the findings as JSON (docs/cli-json.md)")
	return cmd
}

func printFindings(w io.Writer, resp *catalogv1.ListFindingsResponse) {
	if len(resp.GetFindings()) == 0 {
		fmt.Fprintln(w, "no findings")
	}
	for _, f := range resp.GetFindings() {
		mark := ""
		if f.GetUncertain() {
			mark = " (uncertain)"
		}
		fmt.Fprintf(w, "%s %s %s@%s %s%s\n  %s\n", f.GetSeverity(), f.GetAdvisoryId(), f.GetName(), f.GetVersion(), f.GetComponent().GetPurl(), mark, f.GetReason())
	}
	if resp.GetTruncated() {
		fmt.Fprintln(w, "(truncated: there may be more findings)")
	}
}
