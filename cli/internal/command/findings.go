package command

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/tlog"
)

// raisedFinding is one finding.raised log entry, as custody findings
// --json prints it (docs/cli-json.md).
type raisedFinding struct {
	LogIndex    int64      `json:"log_index"`
	Time        time.Time  `json:"time"`
	Advisory    string     `json:"advisory"`
	Severity    string     `json:"severity"`
	Environment string     `json:"environment"`
	Components  []string   `json:"components"`
	Reasons     []string   `json:"reasons"`
	ImportIndex int64      `json:"import_log_index"`
	EpochTime   *time.Time `json:"epoch_time,omitempty"`
	DryRun      bool       `json:"dry_run,omitempty"`
}

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
could not be compared: it is reported rather than passed over. A finding that
a verified not_affected VEX statement about the artifact suppresses (custody
vex add; decision 0096) is listed as suppressed, naming the VEX log entry,
and does not count.

For an artifact it also lists the findings the gatekeeper raised: each
finding.raised log entry about its digest (an advisory import that made the
policy deny it where it was admitted or deployed; decision 0097), every entry
verified against the trust root as custody audit does. Decisions and tokens
for it in that environment issued before the finding are refused by the
broker and the edges (decision 0098). Exit 1 when there are findings.`,
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
			cat, root, done, err := c.catalogClient(cmd.Context(), id == "")
			if err != nil {
				return err
			}
			defer done()
			resp, err := cat.ListFindings(cmd.Context(), req)
			if err != nil {
				return fmt.Errorf("findings: %w", err)
			}
			var raised []raisedFinding
			var suppressed []jsonSuppressed
			if id == "" {
				kept, sup, err := suppressFindings(cmd.Context(), cat, root, args[0], resp.GetFindings())
				if err != nil {
					return err
				}
				resp.Findings, suppressed = kept, append([]jsonSuppressed{}, sup...)
				dgst, err := resolveDigest(cmd.Context(), cat, root, args[0])
				if err != nil {
					return err
				}
				a, err := audit(cmd.Context(), cat, root, dgst)
				if err != nil {
					return err
				}
				raised = []raisedFinding{}
				for _, e := range a.Events {
					if e.Type != tlog.TypeFindingRaised {
						continue
					}
					f := raisedFinding{LogIndex: e.Index, Time: e.Time}
					if err := json.Unmarshal(e.Details, &f); err != nil {
						return fmt.Errorf("finding.raised entry %d: %w", e.Index, err)
					}
					f.LogIndex, f.Time = e.Index, e.Time
					raised = append(raised, f)
				}
			}
			if asJSON {
				if err := c.printFindingsJSON(resp, raised, suppressed); err != nil {
					return err
				}
			} else {
				printFindings(c.stdout, resp)
				printSuppressed(c.stdout, suppressed)
				printRaised(c.stdout, raised)
			}
			if n := len(resp.GetFindings()) + len(raised); n > 0 {
				return &exitError{code: ExitDenied, err: fmt.Errorf("%d findings, %d raised", len(resp.GetFindings()), len(raised))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "advisory", "", "list the artifacts this advisory affects instead")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the findings as JSON (docs/cli-json.md)")
	return cmd
}

// printFindingsJSON prints the ListFindings response by protojson, with
// "raised" added for an artifact.
func (c *cli) printFindingsJSON(resp *catalogv1.ListFindingsResponse, raised []raisedFinding, suppressed []jsonSuppressed) error {
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(resp)
	if err != nil {
		return err
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	if raised != nil {
		out["raised"] = raised
	}
	if suppressed != nil {
		out["suppressed"] = suppressed
	}
	return printJSON(c.stdout, out)
}

func printSuppressed(w io.Writer, sup []jsonSuppressed) {
	for _, s := range sup {
		fmt.Fprintf(w, "suppressed %s %s: not_affected by VEX log index %d (statement %d, %s) %s%s\n",
			s.Advisory, s.Component, s.LogIndex, s.Statement, s.Actor, s.Justification, s.Impact)
	}
}

func printRaised(w io.Writer, raised []raisedFinding) {
	for _, f := range raised {
		effect := "decisions and tokens issued before it are refused"
		if f.DryRun {
			effect = "dry-run: nothing refused"
		}
		fmt.Fprintf(w, "raised %s %s in %s at %s (log index %d, import %d): %s\n",
			f.Severity, f.Advisory, f.Environment, f.Time.UTC().Format(time.RFC3339), f.LogIndex, f.ImportIndex, effect)
	}
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
