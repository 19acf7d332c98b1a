package command

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
)

// debugCmd holds probes used by the demo and by operators checking policy.
func (c *cli) debugCmd() *cobra.Command {
	dbg := &cobra.Command{Use: "debug", Short: "Probes for checking authorization", Hidden: true}
	dbg.AddCommand(&cobra.Command{
		Use:   "call-signer",
		Short: "Ask the signer to sign a provenance statement as --as (expected to be denied unless publisher)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := c.env(cmd.Context(), "builder")
			if err != nil {
				return err
			}
			defer env.Close()
			svid, err := env.Source.GetX509SVID()
			if err != nil {
				return err
			}
			st, err := attest.NewProvenance(attest.Artifact{Name: "probe", Version: "0", Digest: "sha256:" + strings.Repeat("0", 64),
				Channel: "dev", BuilderID: svid.ID.String()})
			if err != nil {
				return err
			}
			cc, err := env.Dial("signer")
			if err != nil {
				return err
			}
			defer cc.Close()
			_, err = signerv1.NewSignerServiceClient(cc).SignArtifact(cmd.Context(), &signerv1.SignArtifactRequest{Channel: "dev", Statement: st})
			if status.Code(err) == codes.PermissionDenied {
				return denied("signer refused %s: %v", svid.ID, message(err))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "the signer signed for %s\n", svid.ID)
			return nil
		},
	})
	return dbg
}
