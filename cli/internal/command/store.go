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
	cmd.AddCommand(c.storeRewrapCmd(), c.storeRetentionCmd(), c.storeKEKCmd())
	return cmd
}

func (c *cli) storeRetentionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "retention",
		Short: "Apply the publisher's retention policy",
	}
	var dryRun, asJSON bool
	run := &cobra.Command{
		Use:   "run",
		Short: "Delete the versions the retention policy selects now (--dry-run: only list them)",
		Long: `Applies the publisher's retention policy (--retention-policy) now; it also
runs every --retention-interval. Versions of a name beyond keep_last or older
than max_age on the channels the policy names are deleted: their data key is
destroyed, then their ciphertext, then their binding, and each deletion is
logged as artifact.retention-deleted. Anything the catalog shows deployed or
approved, and the newest version of each name, is kept. If the catalog
cannot be asked, nothing is deleted.`,
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
			resp, err := publisherv1.NewStoreServiceClient(cc).RunRetention(cmd.Context(), &publisherv1.RunRetentionRequest{DryRun: dryRun})
			if err != nil {
				return fmt.Errorf("run retention: %w", err)
			}
			if asJSON {
				c.printProto(resp)
				return nil
			}
			verb := "deleted"
			if resp.GetDryRun() {
				verb = "would delete"
			}
			for _, it := range resp.GetDeleted() {
				blob := "blob destroyed"
				if !it.GetBlobDestroyed() {
					blob = "blob kept: another name@version binds it"
				}
				fmt.Fprintf(c.stdout, "%s %s@%s %s (%s; %s)\n", verb, it.GetName(), it.GetVersion(), it.GetDigest(), it.GetReason(), blob)
			}
			for _, it := range resp.GetKept() {
				fmt.Fprintf(c.stdout, "kept %s@%s %s (%s)\n", it.GetName(), it.GetVersion(), it.GetDigest(), it.GetReason())
			}
			if int64(len(resp.GetDeleted())) < resp.GetDeletedCount() || int64(len(resp.GetKept())) < resp.GetKeptCount() {
				fmt.Fprintln(c.stdout, "(lists cut at 1000 items each; the publisher log has every one)")
			}
			fmt.Fprintf(c.stdout, "%s %d, kept %d\n", verb, resp.GetDeletedCount(), resp.GetKeptCount())
			return nil
		},
	}
	run.Flags().BoolVar(&dryRun, "dry-run", false, "only list what would be deleted")
	run.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.AddCommand(run)
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
