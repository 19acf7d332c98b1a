package command

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
)

// storeKEKCmd administers a KEK in the signer's HSM (publisher --kek
// signer): rotate it, then `custody store rewrap`, then destroy the old
// versions.
func (c *cli) storeKEKCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kek",
		Short: "Rotate or destroy versions of the KEK in the signer's HSM (publisher --kek signer)",
	}
	var name string
	var asJSON bool
	out := func(v any, text string) {
		if asJSON {
			b, _ := json.Marshal(v)
			fmt.Fprintln(c.stdout, string(b))
			return
		}
		fmt.Fprintln(c.stdout, text)
	}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Add a KEK version; new data keys are wrapped under it",
		Long: `Adds a version to the KEK in the signer's PKCS#11 token. New blobs are
wrapped under it at once; run ` + "`custody store rewrap`" + ` to move existing data keys to it,
then ` + "`custody store kek destroy --version N`" + ` for each older version.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cc, done, err := c.dialSigner(cmd.Context(), "admin")
			if err != nil {
				return err
			}
			defer done()
			r, err := signerv1.NewKeyWrapServiceClient(cc).RotateWrappingKey(cmd.Context(), &signerv1.RotateWrappingKeyRequest{KeyName: name})
			if err != nil {
				return fmt.Errorf("rotate KEK %q: %w", name, err)
			}
			out(map[string]any{"kek": name, "version": r.GetVersion()},
				fmt.Sprintf("KEK %s is at version %d: run `custody store rewrap`, then destroy the older versions", name, r.GetVersion()))
			return nil
		},
	}
	var version int32
	destroy := &cobra.Command{
		Use:   "destroy",
		Short: "Destroy one old KEK version in the HSM (after `custody store rewrap` reported no failures)",
		Long: `Destroys one KEK version in the signer's token. A data key still wrapped
under it can never be unwrapped again: run ` + "`custody store rewrap`" + ` first and check
that it reports 0 failed. The newest version cannot be destroyed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if version < 1 {
				return fmt.Errorf("--version is required: the KEK version to destroy")
			}
			cc, done, err := c.dialSigner(cmd.Context(), "admin")
			if err != nil {
				return err
			}
			defer done()
			if _, err := signerv1.NewKeyWrapServiceClient(cc).DestroyWrappingKeyVersion(cmd.Context(),
				&signerv1.DestroyWrappingKeyVersionRequest{KeyName: name, Version: version}); err != nil {
				return fmt.Errorf("destroy KEK %q version %d: %w", name, version, err)
			}
			out(map[string]any{"kek": name, "destroyed_version": version}, fmt.Sprintf("KEK %s version %d destroyed", name, version))
			return nil
		},
	}
	destroy.Flags().Int32Var(&version, "version", 0, "the KEK version to destroy")
	for _, sub := range []*cobra.Command{rotate, destroy} {
		sub.Flags().StringVar(&name, "kek", "publisher", "the KEK's name (the publisher's --signer-kek)")
		sub.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
		cmd.AddCommand(sub)
	}
	return cmd
}
