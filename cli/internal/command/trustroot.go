package command

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/strictjson"
	"github.com/custody-dev/custody/libs/trustroot"
)

// The trust-root ceremony: root keys are made and kept offline (keygen),
// the signer drafts the next version listing its keys (draft), each root
// key holder checks and signs it offline (sign), and the result goes back
// to the signer (publish). See docs/trust-root.md.
func (c *cli) trustrootCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trustroot",
		Short: "The trust-root ceremony: make root keys, draft, sign offline, publish and show trust roots",
	}
	cmd.AddCommand(c.trustrootKeygenCmd(), c.trustrootDraftCmd(), c.trustrootSignCmd(), c.trustrootPublishCmd(), c.trustrootShowCmd())
	return cmd
}

func (c *cli) trustrootKeygenCmd() *cobra.Command {
	var out, alg string
	cmd := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Make a root key offline: writes the private key (mode 0600) and prints its id and public key",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			k, err := trustroot.GenerateKey(alg)
			if err != nil {
				return err
			}
			priv, err := trustroot.MarshalPrivateKey(k)
			if err != nil {
				return err
			}
			pub, err := trustroot.PublicKey(k)
			if err != nil {
				return err
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s exists: refusing to overwrite a root key; choose another --out", out)
			}
			if err != nil {
				return err
			}
			if _, err := f.Write(priv); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "wrote root key %s (%s) to %s; keep it offline\n%s", pub.ID, pub.Algorithm, out,
				pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub.PublicKey}))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "private key file to create (required)")
	cmd.Flags().StringVar(&alg, "algorithm", attest.AlgECDSAP256, "ecdsa-p256-sha256 or ed25519")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func (c *cli) trustrootDraftCmd() *cobra.Command {
	var out string
	var rootKeyFiles []string
	var threshold int
	var expires time.Duration
	cmd := &cobra.Command{
		Use:   "draft -o FILE [--root-key PUBFILE ...] [--threshold N] [--expires 8760h]",
		Short: "Have the signer draft the next trust-root version listing its keys, for the offline ceremony (as admin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			kc, done, err := c.keyClient(ctx)
			if err != nil {
				return err
			}
			defer done()
			resp, err := kc.DraftTrustRoot(ctx, &signerv1.DraftTrustRootRequest{})
			if err != nil {
				return fmt.Errorf("draft the trust root: %w", err)
			}
			r, err := decodeRootDraft(resp.GetRoot())
			if err != nil {
				return fmt.Errorf("the signer's draft: %w", err)
			}
			if len(rootKeyFiles) > 0 {
				r.RootKeys = nil
				for _, f := range rootKeyFiles {
					k, err := readRootPublicKey(f)
					if err != nil {
						return err
					}
					r.RootKeys = append(r.RootKeys, k)
				}
			}
			if cmd.Flags().Changed("threshold") {
				r.Threshold = threshold
			}
			if cmd.Flags().Changed("expires") || r.Expires.IsZero() {
				r.Expires = time.Now().Add(expires).UTC().Truncate(time.Second)
			}
			b, err := r.Marshal()
			if err != nil {
				return fmt.Errorf("draft v%d: %w (set root keys, threshold and expiry with --root-key, --threshold, --expires)", r.Version, err)
			}
			var indented bytes.Buffer
			if err := json.Indent(&indented, b, "", "  "); err != nil {
				return err
			}
			indented.WriteByte('\n')
			if err := writeRootFile(out, indented.Bytes()); err != nil {
				return err
			}
			if err := printRoot(c.stdout, r, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "wrote the draft of trust root v%d to %s: have %d root key holder(s) check and sign it with `custody trustroot sign`\n", r.Version, out, r.Threshold)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "draft file to write (required)")
	cmd.Flags().StringArrayVar(&rootKeyFiles, "root-key", nil, "root public key PEM file (repeatable; replaces the draft's root keys: version 1 and root-key rotation)")
	cmd.Flags().IntVar(&threshold, "threshold", 1, "root signatures required (default: the draft's)")
	cmd.Flags().DurationVar(&expires, "expires", 8760*time.Hour, "validity from now (default: the draft's expiry, else 8760h)")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

func (c *cli) trustrootSignCmd() *cobra.Command {
	var keyFile, out, previousFile string
	cmd := &cobra.Command{
		Use:   "sign FILE --key KEYFILE -o OUT [--previous PREVIOUS]",
		Short: "Check a draft or partly signed trust root and add a root key's signature (offline)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			in, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			keyPEM, err := os.ReadFile(keyFile)
			if err != nil {
				return err
			}
			key, err := trustroot.ParsePrivateKey(keyPEM)
			if err != nil {
				return fmt.Errorf("%s: %w", keyFile, err)
			}
			r, env, err := readRoot(in)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			var previous *trustroot.Root
			if previousFile != "" {
				b, err := os.ReadFile(previousFile)
				if err != nil {
					return err
				}
				if previous, err = trustroot.Parse(b); err != nil {
					return fmt.Errorf("--previous %s: %w", previousFile, err)
				}
			}
			fmt.Fprintf(c.stdout, "Signing:\n")
			if err := printRoot(c.stdout, r, env); err != nil {
				return err
			}
			if previous != nil {
				printRootChanges(c.stdout, previous, r)
			}
			signed, err := trustroot.SignWith(in, key, previous)
			if err != nil {
				return err
			}
			if err := writeRootFile(out, signed); err != nil {
				return err
			}
			pub, _ := trustroot.PublicKey(key)
			fmt.Fprintf(c.stdout, "signed trust root v%d with root key %s; wrote %s\n", r.Version, pub.ID, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "root `KEYFILE`: a private key from custody trustroot keygen (required)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "envelope file to write (required; may be FILE)")
	cmd.Flags().StringVar(&previousFile, "previous", "", "the previous version's envelope: to sign with a root key this version drops, and to show what changes")
	_ = cmd.MarkFlagRequired("key")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

func (c *cli) trustrootPublishCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "publish FILE",
		Short: "Publish a signed trust root to the signer (as admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if _, err := trustroot.Parse(env); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			kc, done, err := c.keyClient(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			resp, err := kc.PublishTrustRoot(cmd.Context(), &signerv1.PublishTrustRootRequest{Root: env})
			if status.Code(err) == codes.FailedPrecondition || status.Code(err) == codes.InvalidArgument {
				// It does not chain: the ceremony must sign again.
				return denied("publish the trust root: refused: %s", status.Convert(err).Message())
			}
			if err != nil {
				return fmt.Errorf("publish the trust root: %w", err)
			}
			fmt.Fprintf(c.stdout, "published trust root v%d\n", resp.GetVersion())
			return nil
		},
	}
}

func (c *cli) trustrootShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show [FILE]",
		Short: "Show a trust root: FILE (a draft or an envelope), else the signer's latest",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var in []byte
			if len(args) == 1 {
				b, err := os.ReadFile(args[0])
				if err != nil {
					return err
				}
				in = b
			} else {
				ctx := cmd.Context()
				env, err := c.env(ctx, "admin")
				if err != nil {
					return err
				}
				defer env.Close()
				cc, err := env.Dial("signer")
				if err != nil {
					return err
				}
				defer cc.Close()
				resp, err := signerv1.NewSignerServiceClient(cc).GetTrustRoot(ctx, &signerv1.GetTrustRootRequest{})
				if err != nil {
					return fmt.Errorf("get the trust root: %w", err)
				}
				if len(resp.GetRoots()) == 0 {
					return errors.New("the signer has no trust root yet: run the ceremony (custody trustroot draft, sign, publish)")
				}
				in = resp.GetRoots()[len(resp.GetRoots())-1]
			}
			r, env, err := readRoot(in)
			if err != nil {
				return err
			}
			return printRoot(c.stdout, r, env)
		},
	}
}

// decodeRootDraft reads a draft without validating it: the ceremony's flags
// may complete it (root keys of version 1).
func decodeRootDraft(b []byte) (*trustroot.Root, error) {
	var r trustroot.Root
	if err := strictjson.Decode(b, trustroot.MaxSize, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", trustroot.ErrMalformed, err)
	}
	return &r, nil
}

// readRoot reads a draft (env nil) or an envelope.
func readRoot(b []byte) (*trustroot.Root, *attest.Envelope, error) {
	if r, err := trustroot.ParseUnsigned(b); err == nil {
		return r, nil, nil
	}
	r, err := trustroot.Parse(b)
	if err != nil {
		return nil, nil, err
	}
	env, err := attest.ParseEnvelope(b)
	if err != nil {
		return nil, nil, err
	}
	return r, env, nil
}

// readRootPublicKey reads a PEM public key, as keygen prints it.
func readRootPublicKey(path string) (trustroot.Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return trustroot.Key{}, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" {
		return trustroot.Key{}, fmt.Errorf("--root-key %s: want a PEM PUBLIC KEY, as `custody trustroot keygen` prints", path)
	}
	pub, alg, err := attest.ParsePublicKey(block.Bytes)
	if err != nil {
		return trustroot.Key{}, fmt.Errorf("--root-key %s: %w", path, err)
	}
	id, err := attest.KeyID(pub)
	if err != nil {
		return trustroot.Key{}, err
	}
	return trustroot.Key{ID: id, Algorithm: alg, PublicKey: block.Bytes}, nil
}

// printRoot prints what a root says, for a human to check before signing,
// and for an envelope whether its own root keys' threshold is met.
func printRoot(w io.Writer, r *trustroot.Root, env *attest.Envelope) error {
	fmt.Fprintf(w, "trust root v%d, expires %s (in %s)\n", r.Version, rootTime(r.Expires), time.Until(r.Expires).Round(time.Hour))
	fmt.Fprintf(w, "root keys (%d of %d must sign):\n", r.Threshold, len(r.RootKeys))
	for _, k := range r.RootKeys {
		fmt.Fprintf(w, "  %s  %s\n", k.ID, k.Algorithm)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "signing keys:\n  NAME\tVERSION\tPURPOSE\tSTATUS\tCHANNELS\tVALID FROM\tVALID UNTIL\tREVOKED AT\tKEY ID")
	for _, k := range r.SigningKeys {
		channels := strings.Join(k.Channels, ",")
		if channels == "" {
			channels = "all"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.Name, k.Version, k.Purpose, k.Status, channels,
			rootTime(k.ValidFrom), rootTimePtr(k.ValidUntil), rootTimePtr(k.RevokedAt), k.ID)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "log keys:")
	for _, l := range r.LogKeys {
		fmt.Fprintf(w, "  %s  %s\n", l.Origin, l.VerifierKey)
	}
	fmt.Fprintln(w, "edge token keys:")
	for _, k := range r.EdgeTokenKeys {
		fmt.Fprintf(w, "  %s  %s  valid from %s until %s\n", k.ID, k.Algorithm, rootTimePtr(k.ValidFrom), rootTimePtr(k.ValidUntil))
	}
	if env == nil {
		fmt.Fprintln(w, "signatures: none (a draft)")
		return nil
	}
	var ids []string
	for _, s := range env.Signatures {
		ids = append(ids, s.KeyID)
	}
	fmt.Fprintf(w, "signatures: %d (%s)\n", len(ids), strings.Join(ids, ", "))
	raw, err := env.Marshal()
	if err != nil {
		return err
	}
	if _, err := trustroot.VerifyThreshold(raw, r.RootKeys, r.Threshold); err != nil {
		fmt.Fprintf(w, "its own threshold is NOT met: %v\n", err)
	} else {
		fmt.Fprintf(w, "its own threshold is met (%d of its root keys); an update also needs the previous version's threshold\n", r.Threshold)
	}
	return nil
}

// printRootChanges prints what next changes from previous in keys.
func printRootChanges(w io.Writer, previous, next *trustroot.Root) {
	fmt.Fprintf(w, "changes from v%d:\n", previous.Version)
	ids := func(keys []trustroot.Key) []string {
		out := make([]string, len(keys))
		for i, k := range keys {
			out[i] = k.ID
		}
		return out
	}
	diff := func(what string, old, new []string) {
		for _, id := range new {
			if !slices.Contains(old, id) {
				fmt.Fprintf(w, "  + %s %s\n", what, id)
			}
		}
		for _, id := range old {
			if !slices.Contains(new, id) {
				fmt.Fprintf(w, "  - %s %s\n", what, id)
			}
		}
	}
	diff("root key", ids(previous.RootKeys), ids(next.RootKeys))
	signing := func(r *trustroot.Root) []string {
		var out []string
		for _, k := range r.SigningKeys {
			out = append(out, fmt.Sprintf("%s v%d %s (%s)", k.Name, k.Version, k.Status, k.ID))
		}
		return out
	}
	diff("signing key", signing(previous), signing(next))
	if previous.Threshold != next.Threshold {
		fmt.Fprintf(w, "  threshold %d -> %d\n", previous.Threshold, next.Threshold)
	}
}

func rootTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func rootTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return rootTime(*t)
}

// writeRootFile writes b to path through a temporary file beside it.
func writeRootFile(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
