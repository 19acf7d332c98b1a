package command

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
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
	dbg.AddCommand(&cobra.Command{
		Use:   "download-from-publisher DIGEST",
		Short: "Read a blob straight from the publisher as --as (denied unless an edge or admin: deployers go through an edge)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env, err := c.env(cmd.Context(), "deployer")
			if err != nil {
				return err
			}
			defer env.Close()
			cc, err := env.Dial("publisher")
			if err != nil {
				return err
			}
			defer cc.Close()
			stream, err := publisherv1.NewPublisherServiceClient(cc).Download(cmd.Context(), &publisherv1.DownloadRequest{Digest: args[0]})
			var n int
			for err == nil {
				var msg *publisherv1.DownloadResponse
				if msg, err = stream.Recv(); err == nil {
					n += len(msg.GetChunk())
				}
			}
			if status.Code(err) == codes.PermissionDenied {
				return denied("publisher refused: %v", message(err))
			}
			if !errors.Is(err, io.EOF) {
				return err
			}
			fmt.Fprintf(c.stdout, "the publisher sent %d bytes\n", n)
			return nil
		},
	})
	return dbg
}
