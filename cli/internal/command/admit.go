package command

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"

	"github.com/custody-dev/custody/cli/internal/conn"
)

func (c *cli) admitCmd() *cobra.Command {
	var envName, saveDecision string
	cmd := &cobra.Command{
		Use:   "admit NAME@VERSION --env E [--save-decision FILE]",
		Short: "Ask the gatekeeper whether an artifact may be deployed (exit 0 on allow, 1 on deny)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env, err := c.env(cmd.Context(), "deployer")
			if err != nil {
				return err
			}
			defer env.Close()
			resp, err := admit(cmd.Context(), env, args[0], envName)
			if err != nil {
				return err
			}
			c.printDecision(args[0], envName, resp)
			if resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
				return denied("%s denied for %s", args[0], envName)
			}
			if saveDecision != "" {
				// The signed decision record, for `custody deploy record --decision`.
				if err := os.WriteFile(saveDecision, resp.GetDecisionEnvelope(), 0o644); err != nil {
					return fmt.Errorf("--save-decision: %w", err)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&envName, "env", "", "environment to deploy to (required)")
	cmd.Flags().StringVar(&saveDecision, "save-decision", "", "on an allow, write the signed decision record here (for `custody deploy record --decision`)")
	_ = cmd.MarkFlagRequired("env")
	return cmd
}

func admit(ctx context.Context, env *conn.Env, ref, envName string) (*gatekeeperv1.AdmitResponse, error) {
	name, version, digest, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	cc, err := env.Dial("gatekeeper")
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	resp, err := gatekeeperv1.NewGatekeeperServiceClient(cc).Admit(ctx, &gatekeeperv1.AdmitRequest{Name: name, Version: version, Digest: digest, Environment: envName})
	if err != nil {
		return nil, fmt.Errorf("admit %s: %w", ref, err)
	}
	return resp, nil
}

func (c *cli) printDecision(ref, envName string, resp *gatekeeperv1.AdmitResponse) {
	verdict := "DENY"
	if resp.GetDecision() == gatekeeperv1.Decision_DECISION_ALLOW {
		verdict = "ALLOW"
	}
	fmt.Fprintf(c.stdout, "%s %s to %s\n", verdict, ref, envName)
	for _, r := range resp.GetReasons() {
		fmt.Fprintf(c.stdout, "  - %s\n", r)
	}
	if d := resp.GetDigest(); d != "" {
		fmt.Fprintf(c.stdout, "  digest      %s\n", d)
	}
	fmt.Fprintf(c.stdout, "  decision    %s (log index %d)\n  policy      %s\n", resp.GetDecisionId(), resp.GetLogIndex(), resp.GetPolicyDigest())
}
