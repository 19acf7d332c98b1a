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
	var (
		envName, output string
		asJSON          bool
	)
	cmd := &cobra.Command{
		Use:   "admit NAME@VERSION --env E [-o FILE] [--json]",
		Short: "Ask the gatekeeper whether an artifact may be deployed (exit 0 on allow, 1 on deny)",
		Long: "Admit asks the gatekeeper for a decision and prints it with every reason (--json: as one\n" +
			"object, see docs/cli-json.md). -o FILE writes the signed decision record, an allow's or a\n" +
			"deny's, for `custody deploy record --decision FILE` or for the audit trail; a deny of an\n" +
			"artifact the catalog does not know has no signed record, and then nothing is written.",
		Args: cobra.ExactArgs(1),
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
			out := admitJSON(args[0], envName, resp)
			if output != "" && len(resp.GetDecisionEnvelope()) > 0 {
				if err := os.WriteFile(output, resp.GetDecisionEnvelope(), 0o644); err != nil {
					return fmt.Errorf("-o: %w", err)
				}
				out.DecisionFile = output
			}
			if asJSON {
				if err := printJSON(c.stdout, out); err != nil {
					return err
				}
			} else {
				c.printDecision(args[0], envName, resp)
				if out.DecisionFile != "" {
					fmt.Fprintf(c.stdout, "  record      %s\n", out.DecisionFile)
				}
			}
			if resp.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
				return denied("%s denied for %s", args[0], envName)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&envName, "env", "", "environment to deploy to (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the signed decision record here (for `custody deploy record --decision`)")
	cmd.Flags().StringVar(&output, "save-decision", "", "the same as -o")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the decision and every reason as JSON")
	_ = cmd.MarkFlagRequired("env")
	return cmd
}

// jsonAdmission is custody admit --json (docs/cli-json.md).
type jsonAdmission struct {
	// Decision is "allow" or "deny".
	Decision    string `json:"decision"`
	Ref         string `json:"ref"`
	Environment string `json:"environment"`
	// Digest is the artifact's, if the gatekeeper found it.
	Digest string `json:"digest,omitempty"`
	// Reasons are every reason to deny or, for an allow, every check that
	// passed.
	Reasons      []string `json:"reasons"`
	DecisionID   string   `json:"decision_id"`
	PolicyDigest string   `json:"policy_digest"`
	// PolicyRevision is the policy bundle's revision.
	PolicyRevision string `json:"policy_revision"`
	// DryRun says the environment is in dry-run mode; RealDecision is the
	// decision without it ("deny" for a dry-run allow the policy denied).
	DryRun       bool   `json:"dry_run"`
	RealDecision string `json:"real_decision"`
	// InputAttestations are the attestations the decision evaluated.
	InputAttestations []jsonInputAttestation `json:"input_attestations"`
	LogIndex          int64                  `json:"log_index"`
	// Signed says whether the gatekeeper returned a signed decision record.
	Signed bool `json:"signed"`
	// DecisionFile is where -o wrote the signed record.
	DecisionFile string `json:"decision_file,omitempty"`
}

// jsonInputAttestation is one attestation a decision evaluated.
type jsonInputAttestation struct {
	URI    string            `json:"uri"`
	Digest map[string]string `json:"digest"`
}

func verdictOf(d gatekeeperv1.Decision) string {
	if d == gatekeeperv1.Decision_DECISION_ALLOW {
		return "allow"
	}
	return "deny"
}

func admitJSON(ref, envName string, resp *gatekeeperv1.AdmitResponse) jsonAdmission {
	verdict := verdictOf(resp.GetDecision())
	reasons := resp.GetReasons()
	if reasons == nil {
		reasons = []string{}
	}
	// The real decision is the gatekeeper's word, never more permissive
	// than the decision; unstated, it is the decision.
	real := verdict
	if verdict == "allow" && resp.GetRealDecision() != gatekeeperv1.Decision_DECISION_UNSPECIFIED {
		real = verdictOf(resp.GetRealDecision())
	}
	inputs := []jsonInputAttestation{}
	for _, a := range resp.GetInputAttestations() {
		inputs = append(inputs, jsonInputAttestation{URI: a.GetUri(), Digest: a.GetDigest()})
	}
	return jsonAdmission{Decision: verdict, Ref: ref, Environment: envName, Digest: resp.GetDigest(), Reasons: reasons,
		DecisionID: resp.GetDecisionId(), PolicyDigest: resp.GetPolicyDigest(), PolicyRevision: resp.GetPolicyRevision(),
		DryRun: resp.GetDryRun(), RealDecision: real, InputAttestations: inputs, LogIndex: resp.GetLogIndex(),
		Signed: len(resp.GetDecisionEnvelope()) > 0}
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
		if resp.GetDryRun() && resp.GetRealDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
			verdict = "ALLOW (dry-run: the policy denies)"
		}
	}
	fmt.Fprintf(c.stdout, "%s %s to %s\n", verdict, ref, envName)
	for _, r := range resp.GetReasons() {
		fmt.Fprintf(c.stdout, "  - %s\n", r)
	}
	if d := resp.GetDigest(); d != "" {
		fmt.Fprintf(c.stdout, "  digest      %s\n", d)
	}
	fmt.Fprintf(c.stdout, "  decision    %s (log index %d)\n  policy      %s (revision %s)\n", resp.GetDecisionId(), resp.GetLogIndex(), resp.GetPolicyDigest(), resp.GetPolicyRevision())
	for _, a := range resp.GetInputAttestations() {
		fmt.Fprintf(c.stdout, "  evaluated   %s sha256:%s\n", a.GetUri(), a.GetDigest()["sha256"])
	}
}
