package command

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"

	"github.com/custody-dev/custody/cli/internal/conn"
)

// maxDecisionFile bounds a decision record read from a file (the
// gatekeeper refuses larger ones).
const maxDecisionFile = 64 << 10

// deployment is what `custody deploy record --json` prints.
type deployment struct {
	Name        string `json:"name"`
	Version     string `json:"version"`
	Digest      string `json:"digest"`
	Environment string `json:"environment"`
	DecisionID  string `json:"decision_id"`
	LogIndex    int64  `json:"log_index"`
}

func (c *cli) deployCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "deploy", Short: "Report deployments (as deployer)"}
	var envName, decisionFile string
	var asJSON bool
	record := &cobra.Command{
		Use:   "record NAME@VERSION --env E [--decision FILE]",
		Short: "Record that an artifact was deployed to an environment under an allow decision",
		Long: "Record that NAME@VERSION (or sha256:<hex>) was deployed to --env. The gatekeeper checks that the decision is\n" +
			"its own signed allow for that artifact and environment, then the catalog logs and stores the deployment.\n" +
			"--decision FILE is the decision record saved with `custody admit -o FILE`; without it the\n" +
			"artifact is admitted now and the deployment recorded under that decision.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			env, err := c.env(ctx, "deployer")
			if err != nil {
				return err
			}
			defer env.Close()
			var decision []byte
			if decisionFile != "" {
				if decision, err = readDecision(decisionFile); err != nil {
					return err
				}
			} else {
				dec, err := admit(ctx, env, args[0], envName)
				if err != nil {
					return err
				}
				if dec.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
					c.printDecision(args[0], envName, dec)
					return denied("deploy record %s: admission to %s denied, so there is no decision to deploy under: %s", args[0], envName, strings.Join(dec.GetReasons(), "; "))
				}
				decision = dec.GetDecisionEnvelope()
			}
			d, err := recordDeployment(ctx, env, args[0], envName, decision)
			if err != nil {
				return err
			}
			return c.printDeployment(d, asJSON)
		},
	}
	record.Flags().StringVar(&envName, "env", "", "environment deployed to (required)")
	record.Flags().StringVar(&decisionFile, "decision", "", "the allow decision record deployed under (from `custody admit -o FILE`)")
	record.Flags().BoolVar(&asJSON, "json", false, "print the recorded deployment as JSON")
	_ = record.MarkFlagRequired("env")
	cmd.AddCommand(record)
	return cmd
}

func readDecision(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--decision: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxDecisionFile+1))
	if err != nil {
		return nil, fmt.Errorf("--decision %s: %w", path, err)
	}
	if len(b) > maxDecisionFile {
		return nil, fmt.Errorf("--decision %s: more than %d bytes: want the decision record `custody admit -o` wrote", path, maxDecisionFile)
	}
	return b, nil
}

// recordDeployment reports the deployment of ref to envName under decision
// to the gatekeeper. A refusal (the decision does not vouch for it) exits
// with the denied code.
func recordDeployment(ctx context.Context, env *conn.Env, ref, envName string, decision []byte) (*deployment, error) {
	name, version, digest, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	cc, err := env.Dial("gatekeeper")
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	resp, err := gatekeeperv1.NewGatekeeperServiceClient(cc).RecordDeployment(ctx, &gatekeeperv1.RecordDeploymentRequest{
		Name: name, Version: version, Digest: digest, Environment: envName, DecisionEnvelope: decision,
	})
	if status.Code(err) == codes.PermissionDenied {
		return nil, denied("record deployment of %s to %s: refused: %s", ref, envName, status.Convert(err).Message())
	}
	if err != nil {
		return nil, fmt.Errorf("record deployment of %s to %s: %w", ref, envName, err)
	}
	return &deployment{Name: resp.GetName(), Version: resp.GetVersion(), Digest: resp.GetDigest(), Environment: resp.GetEnvironment(),
		DecisionID: resp.GetDecisionId(), LogIndex: resp.GetLogIndex()}, nil
}

func (c *cli) printDeployment(d *deployment, asJSON bool) error {
	if asJSON {
		return printJSON(c.stdout, d)
	}
	fmt.Fprintf(c.stdout, "recorded deployment of %s@%s (%s) to %s under decision %s (log index %d)\n",
		d.Name, d.Version, d.Digest, d.Environment, d.DecisionID, d.LogIndex)
	return nil
}
