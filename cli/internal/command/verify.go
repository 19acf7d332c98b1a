package command

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/custody-dev/custody/cli/internal/bundle"
	"github.com/custody-dev/custody/cli/internal/conn"
	"github.com/custody-dev/custody/cli/internal/evidence"
)

func (c *cli) verifyCmd() *cobra.Command {
	var bundlePath string
	cmd := &cobra.Command{
		Use:   "verify FILE --bundle BUNDLE",
		Short: "Verify a file offline against its bundle: digest, signature, log entry, checkpoint, inclusion",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(bundlePath)
			if err != nil {
				return err
			}
			b, err := bundle.Parse(raw)
			if err != nil {
				return denied("%v", err)
			}
			keys := b.Keys
			pinned, err := conn.PinnedTrust(c.opts)
			switch {
			case conn.ErrNoTrust(err):
				fmt.Fprintln(c.stderr, "warning: no pinned trust (--trust or --dev-dir): using the keys in the bundle, which only proves the bundle is self-consistent")
			case err != nil:
				return err
			default:
				if err := b.Keys.PinnedTo(pinned); err != nil {
					return denied("%v", err)
				}
				keys = pinned
			}
			if err := evidence.Verify(b.Evidence, keys); err != nil {
				return denied("%v", err)
			}
			a := b.Artifact
			digest, size, err := hashFile(args[0])
			if err != nil {
				return err
			}
			if size != a.Size || digest != a.Digest {
				return denied("%s is not %s@%s: it has %d bytes hashing to %s, the bundle records %d bytes with %s", args[0], a.Name, a.Version, size, digest, a.Size, a.Digest)
			}
			fmt.Fprintf(c.stdout, "OK %s is %s@%s (%s)\n  signed by the artifact key, built by %s\n  logged at index %d, included in a signed checkpoint\n",
				args[0], a.Name, a.Version, a.Digest, a.BuilderID, b.Entry.Index)
			return nil
		},
	}
	cmd.Flags().StringVar(&bundlePath, "bundle", "", "bundle file (required)")
	_ = cmd.MarkFlagRequired("bundle")
	return cmd
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n, nil
}
