package command

import (
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
)

func (c *cli) revokeCmd() *cobra.Command {
	var reason string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "revoke NAME@VERSION|DIGEST --reason R",
		Short: "Revoke one artifact for good: deny it everywhere, refuse its decisions and tokens, purge it from every cache",
		Long: `Revoke one artifact, for good: the gatekeeper denies every admission of its
digest in every environment (dry-run included), the broker issues no URL and
edges serve nothing for it, whenever the decision or token was issued, and the
broker purges it from every CDN and edge (reason artifact-revoked). There is
no un-revoke: publish a fixed version instead. Revoking it again changes and
logs nothing and names the first revocation. Admins and security identities
(/security/*) only; in dev the default is --as admin. Runbook:
docs/runbooks/revoke-artifact.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, version, dgst, err := parseRef(args[0])
			if err != nil {
				return err
			}
			gk, done, err := c.gatekeeperClient(cmd.Context(), "admin")
			if err != nil {
				return err
			}
			defer done()
			resp, err := gk.RevokeArtifact(cmd.Context(), &gatekeeperv1.RevokeArtifactRequest{Name: name, Version: version, Digest: dgst, Reason: reason})
			if err != nil {
				st := status.Convert(err)
				switch st.Code() {
				case codes.PermissionDenied:
					return fmt.Errorf("revoke %s: %s: only admins and security identities may revoke (--as)", args[0], st.Message())
				case codes.Unavailable:
					return fmt.Errorf("revoke %s: %s", args[0], st.Message())
				}
				return fmt.Errorf("revoke %s: %w", args[0], err)
			}
			if asJSON {
				c.printProto(resp)
				return nil
			}
			r := resp.GetRevocation()
			what := r.GetDigest()
			if resp.GetName() != "" {
				what = fmt.Sprintf("%s@%s (%s)", resp.GetName(), resp.GetVersion(), r.GetDigest())
			}
			if resp.GetAlreadyRevoked() {
				fmt.Fprintf(c.stdout, "ALREADY REVOKED %s at %s by %s (log index %d): nothing changed\n  reason: %s\n",
					what, fmtTime(r.GetEpochTime().AsTime()), r.GetRevokedBy(), r.GetLogIndex(), r.GetReason())
				return nil
			}
			fmt.Fprintf(c.stdout, "REVOKED %s at %s (log index %d)\n", what, fmtTime(r.GetEpochTime().AsTime()), r.GetLogIndex())
			fmt.Fprintf(c.stdout, "  every admission of it is denied, in every environment, for good\n")
			fmt.Fprintf(c.stdout, "  the broker issues no URL and edges serve nothing for it; it is being purged from every CDN and edge\n")
			fmt.Fprintf(c.stdout, "  check: custody purge status --pending; custody audit %s\n", r.GetDigest())
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why; logged and shown in every denial of the artifact (required, at most 512 bytes)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the response as JSON (docs/cli-json.md)")
	_ = cmd.MarkFlagRequired("reason")
	return cmd
}
