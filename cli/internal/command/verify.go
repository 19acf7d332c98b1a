package command

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/custody-dev/custody/libs/trustroot"

	"github.com/custody-dev/custody/cli/internal/bundle"
	"github.com/custody-dev/custody/cli/internal/conn"
	libdigest "github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/verify"
)

func (c *cli) verifyCmd() *cobra.Command {
	var bundlePath string
	var selfOnly bool
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
			root, err := c.bundleRoot(b, time.Now(), selfOnly)
			if err != nil {
				return err
			}
			if err := verify.Check(b.Evidence, root, verify.Options{}).Err(); err != nil {
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
			if selfOnly {
				fmt.Fprintf(c.stdout, "SELF-CONSISTENT ONLY %s is %s@%s (%s) by the bundle's own trust root v%d\n  NOT verified against a pinned trust root: anyone can build a bundle that passes this check; do not deploy on it\n",
					args[0], a.Name, a.Version, a.Digest, root.Version)
				return nil
			}
			fmt.Fprintf(c.stdout, "OK %s is %s@%s (%s)\n  signed by an artifact key of trust root v%d, built by %s\n  logged at index %d, included in a checkpoint signed by the log key of trust root v%d\n",
				args[0], a.Name, a.Version, a.Digest, root.Version, a.BuilderID, b.Entry.Index, root.Version)
			return nil
		},
	}
	cmd.Flags().StringVar(&bundlePath, "bundle", "", "bundle file (required)")
	cmd.Flags().BoolVar(&selfOnly, "self-consistency-only", false,
		"check the bundle against its own oldest trust root instead of a pinned one (refused with --trust-root or --dev-dir): proves only that the bundle is self-consistent, never who made it")
	_ = cmd.MarkFlagRequired("bundle")
	return cmd
}

// bundleRoot returns the trust root to verify b with: the pinned one (none
// pinned is a denial; with selfOnly, the bundle's own oldest root instead,
// and a pinned root is refused so that nobody mistakes which one was used),
// walked forward along the bundle's chain (refusing rollbacks, gaps, bad
// signatures and expired versions), at least the version b was verified
// against, and unexpired at now.
func (c *cli) bundleRoot(b *bundle.Bundle, now time.Time, selfOnly bool) (*trustroot.Root, error) {
	pinned, err := conn.PinnedRoot(c.opts)
	switch {
	case selfOnly && !conn.ErrNoTrust(err):
		return nil, errors.New("--self-consistency-only checks the bundle against its own roots: drop it to verify against the pinned trust root (--trust-root or --dev-dir), or drop those")
	case selfOnly && len(b.TrustRoots) == 0:
		return nil, denied("the bundle carries no trust root to check its self-consistency with")
	case selfOnly:
		if pinned, err = trustroot.Pin(b.TrustRoots[0]); err != nil {
			return nil, denied("the bundle's oldest trust root: %v", err)
		}
	case conn.ErrNoTrust(err):
		// A bundle's own roots prove only that it is self-consistent: a
		// forger ships a root of their own (ATTACKS.md #39).
		return nil, denied("no pinned trust root: pass --trust-root FILE (the root your organisation distributed out of band) or --dev-dir; the bundle's own trust roots cannot vouch for themselves")
	case err != nil:
		return nil, err
	}
	from := pinned.Version()
	if err := pinned.UpdateChain(b.TrustRoots, now); err != nil {
		return nil, denied("the bundle's trust roots do not chain from the pinned v%d: %v", from, err)
	}
	if v := pinned.Version(); v < b.TrustRootVersion {
		return nil, denied("the bundle was verified against trust root v%d, but its chain reaches only v%d from the pinned v%d", b.TrustRootVersion, v, from)
	}
	root, err := pinned.Current(now)
	if err != nil {
		return nil, denied("%v", err)
	}
	return root, nil
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
	return libdigest.FromSum(h.Sum(nil)), n, nil
}
