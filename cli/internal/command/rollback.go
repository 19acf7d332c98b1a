package command

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
)

// rollbackCmd is custody rollback request|approve|list (decision 0078).
func (c *cli) rollbackCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Request, approve or list rollback approvals: admitting a lower version than the highest deployed to an environment",
	}
	var name, from, to, envName, reason string
	var reqJSON, apprJSON, listJSON bool
	request := &cobra.Command{
		Use:   "request NAME --from V --to V --env E --reason R",
		Short: "Ask for a rollback of NAME from V (the highest deployed to E) to a lower V (an admin or approver)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name = args[0]
			gk, done, err := c.gatekeeperClient(cmd.Context(), "admin")
			if err != nil {
				return err
			}
			defer done()
			resp, err := gk.RequestRollback(cmd.Context(), &gatekeeperv1.RequestRollbackRequest{Name: name, FromVersion: from, ToVersion: to, Environment: envName, Reason: reason})
			if err != nil {
				return fmt.Errorf("rollback request %s: %w", name, err)
			}
			if reqJSON {
				c.printProto(resp)
				return nil
			}
			r := resp.GetRollback()
			fmt.Fprintf(c.stdout, "REQUESTED %s (log index %d)\n", r.GetId(), resp.GetLogIndex())
			printRollback(c.stdout, r)
			fmt.Fprintf(c.stdout, "  it needs %d distinct admins or approvers other than you: custody rollback approve %s\n", r.GetQuorum(), r.GetId())
			return nil
		},
	}
	request.Flags().StringVar(&from, "from", "", "the highest version deployed to the environment (required)")
	request.Flags().StringVar(&to, "to", "", "the lower version to admit (required)")
	request.Flags().StringVar(&envName, "env", "", "environment (required)")
	request.Flags().StringVar(&reason, "reason", "", "why; logged (required)")
	request.Flags().BoolVar(&reqJSON, "json", false, "print the response as JSON")
	for _, f := range []string{"from", "to", "env", "reason"} {
		_ = request.MarkFlagRequired(f)
	}
	approve := &cobra.Command{
		Use:   "approve ID",
		Short: "Approve a rollback request; it is granted once its quorum of distinct admins or approvers, not the requester, approved",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			gk, done, err := c.gatekeeperClient(cmd.Context(), "admin")
			if err != nil {
				return err
			}
			defer done()
			resp, err := gk.ApproveRollback(cmd.Context(), &gatekeeperv1.ApproveRollbackRequest{Id: args[0]})
			if err != nil {
				return fmt.Errorf("rollback approve %s: %w", args[0], err)
			}
			if apprJSON {
				c.printProto(resp)
				return nil
			}
			r := resp.GetRollback()
			if r.GetGranted() {
				fmt.Fprintf(c.stdout, "GRANTED %s (log index %d)\n", r.GetId(), resp.GetLogIndex())
			} else {
				fmt.Fprintf(c.stdout, "APPROVED %s (%d of %d, log index %d)\n", r.GetId(), len(r.GetApprovals()), r.GetQuorum(), resp.GetLogIndex())
			}
			printRollback(c.stdout, r)
			return nil
		},
	}
	approve.Flags().BoolVar(&apprJSON, "json", false, "print the response as JSON")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the unexpired rollback requests",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			gk, done, err := c.gatekeeperClient(cmd.Context(), "admin")
			if err != nil {
				return err
			}
			defer done()
			resp, err := gk.ListRollbacks(cmd.Context(), &gatekeeperv1.ListRollbacksRequest{})
			if err != nil {
				return fmt.Errorf("rollback list: %w", err)
			}
			if listJSON {
				c.printProto(resp)
				return nil
			}
			if len(resp.GetRollbacks()) == 0 {
				fmt.Fprintln(c.stdout, "no rollback requests")
			}
			for _, r := range resp.GetRollbacks() {
				state := "PENDING"
				if r.GetGranted() {
					state = "GRANTED"
				}
				fmt.Fprintf(c.stdout, "%s %s\n", state, r.GetId())
				printRollback(c.stdout, r)
			}
			return nil
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print the response as JSON")
	cmd.AddCommand(request, approve, list)
	return cmd
}

func printRollback(w io.Writer, r *gatekeeperv1.Rollback) {
	fmt.Fprintf(w, "  %s %s → %s in %s, requested by %s: %s\n", r.GetName(), r.GetFromVersion(), r.GetToVersion(), r.GetEnvironment(), r.GetRequestedBy(), r.GetReason())
	fmt.Fprintf(w, "  approvals %d of %d: %s; expires %s\n", len(r.GetApprovals()), r.GetQuorum(), strings.Join(r.GetApprovals(), ", "), fmtTime(r.GetExpiresAt().AsTime()))
}
