package command

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
)

func (c *cli) approvalsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approvals",
		Short: "Signing requests on protected channels waiting for approvers (as alice by default)",
	}
	var all bool
	list := &cobra.Command{
		Use:   "list [--all]",
		Short: "List pending approval requests: what each approval vouches for",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ac, done, err := c.approvalClient(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			resp, err := ac.ListApprovalRequests(cmd.Context(), &signerv1.ListApprovalRequestsRequest{All: all})
			if err != nil {
				return fmt.Errorf("list approval requests: %w", err)
			}
			if len(resp.GetRequests()) == 0 && !all {
				fmt.Fprintln(c.stdout, "no pending approval requests")
				return nil
			}
			return printRequests(c.stdout, resp.GetRequests(), all)
		},
	}
	list.Flags().BoolVar(&all, "all", false, "include approved, signed, rejected and expired requests")
	cmd.AddCommand(list)
	return cmd
}

func (c *cli) approveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "approve ID",
		Short: "Approve a signing request: you vouch for its digest, channel, key, builder and source (as alice by default)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ac, done, err := c.approvalClient(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			resp, err := ac.Approve(cmd.Context(), &signerv1.ApproveRequest{Id: args[0]})
			if err != nil {
				return fmt.Errorf("approve %s: %w", args[0], err)
			}
			r := resp.GetRequest()
			fmt.Fprintf(c.stdout, "approved %s: %s@%s (%s) on %s with key %s\n  approvals %s\n", r.GetId(), r.GetName(), r.GetVersion(),
				r.GetDigest(), r.GetChannel(), r.GetKeyName(), approvalsCell(r))
			switch r.GetState() {
			case signerv1.ApprovalState_APPROVAL_STATE_APPROVED:
				fmt.Fprintln(c.stdout, "  quorum reached: a waiting upload is signed now, otherwise the builder's retry is")
			case signerv1.ApprovalState_APPROVAL_STATE_SIGNED:
				fmt.Fprintln(c.stdout, "  already signed")
			}
			return nil
		},
	}
}

func (c *cli) rejectCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "reject ID --reason TEXT",
		Short: "Reject a signing request: the waiting upload fails with your reason (as alice by default)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ac, done, err := c.approvalClient(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			resp, err := ac.Reject(cmd.Context(), &signerv1.RejectRequest{Id: args[0], Reason: reason})
			if err != nil {
				return fmt.Errorf("reject %s: %w", args[0], err)
			}
			r := resp.GetRequest()
			fmt.Fprintf(c.stdout, "rejected %s: %s@%s (%s) on %s\n  reason    %s\n", r.GetId(), r.GetName(), r.GetVersion(), r.GetDigest(), r.GetChannel(), r.GetRejectReason())
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (required; recorded in the log)")
	_ = cmd.MarkFlagRequired("reason")
	return cmd
}

// approvalClient opens an ApprovalService client, as alice unless --as.
func (c *cli) approvalClient(ctx context.Context) (signerv1.ApprovalServiceClient, func(), error) {
	cc, done, err := c.dialSigner(ctx, "alice")
	if err != nil {
		return nil, nil, err
	}
	return signerv1.NewApprovalServiceClient(cc), done, nil
}

// printRequests writes the requests as a table; withState adds their state.
func printRequests(w io.Writer, reqs []*signerv1.ApprovalRequest, withState bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "ID\tNAME\tVERSION\tDIGEST\tBUILDER\tSOURCE\tCHANNEL\tKEY\tAPPROVALS\tEXPIRES"
	if withState {
		head += "\tSTATE"
	}
	fmt.Fprintln(tw, head)
	for _, r := range reqs {
		source := "-"
		if r.GetSourceRepo() != "" || r.GetSourceCommit() != "" {
			source = r.GetSourceRepo() + "@" + r.GetSourceCommit()
		}
		line := strings.Join([]string{r.GetId(), r.GetName(), r.GetVersion(), r.GetDigest(), r.GetBuilderId(), source, r.GetChannel(), r.GetKeyName(),
			approvalsCell(r), r.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)}, "\t")
		if withState {
			line += "\t" + strings.ToLower(strings.TrimPrefix(r.GetState().String(), "APPROVAL_STATE_"))
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

// approvalsCell is "k/n (who, ...)"; approvers under /approver/ are shown by
// name.
func approvalsCell(r *signerv1.ApprovalRequest) string {
	cell := fmt.Sprintf("%d/%d", len(r.GetApprovals()), r.GetQuorum())
	var who []string
	for _, a := range r.GetApprovals() {
		name := a.GetApprover()
		if id, err := spiffeid.FromString(name); err == nil {
			if n, ok := strings.CutPrefix(id.Path(), "/approver/"); ok && !strings.Contains(n, "/") {
				name = n
			}
		}
		who = append(who, name)
	}
	if len(who) > 0 {
		cell += " (" + strings.Join(who, ", ") + ")"
	}
	return cell
}
