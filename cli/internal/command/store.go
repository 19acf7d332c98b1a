package command

import (
	"fmt"

	"github.com/spf13/cobra"

	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
)

func (c *cli) storeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Administer the publisher's encrypted blob store",
	}
	cmd.AddCommand(c.storeRewrapCmd(), c.storeKEKCmd())
	return cmd
}

func (c *cli) storeRewrapCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rewrap",
		Short: "Re-wrap every blob's data key under the newest KEK version (content is not re-encrypted)",
		Long: `Re-wraps every blob's data key under the key-encryption key's newest
version. Run it after rotating the KEK (Vault Transit rotate, a new soft
key-file version, or ` + "`custody store kek rotate`" + ` for the signer's HSM); once it
reports no failures, older KEK versions can be retired (Vault:
min_decryption_version; HSM: ` + "`custody store kek destroy`" + `). Safe to run again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := c.env(cmd.Context(), "admin")
			if err != nil {
				return err
			}
			defer env.Close()
			cc, err := env.Dial("publisher")
			if err != nil {
				return err
			}
			defer cc.Close()
			resp, err := publisherv1.NewStoreServiceClient(cc).RewrapKeys(cmd.Context(), &publisherv1.RewrapKeysRequest{})
			if err != nil {
				return fmt.Errorf("rewrap keys: %w", err)
			}
			fmt.Fprintf(c.stdout, "rewrapped %d data keys, %d failed\n", resp.GetRewrapped(), resp.GetFailed())
			if resp.GetFailed() > 0 {
				return fmt.Errorf("%d data keys could not be rewrapped (see the publisher log); keep the old KEK version until they are", resp.GetFailed())
			}
			return nil
		},
	}
}
