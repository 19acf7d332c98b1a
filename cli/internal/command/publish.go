package command

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
)

const chunkSize = 1 << 20

func (c *cli) publishCmd() *cobra.Command {
	var h publisherv1.UploadHeader
	cmd := &cobra.Command{
		Use:   "publish FILE --name N --version V --channel C",
		Short: "Upload an artifact to the publisher, which stores, signs and logs it (as builder)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			if !fi.Mode().IsRegular() {
				return fmt.Errorf("%s is not a regular file", args[0])
			}
			h.Size = fi.Size()
			env, err := c.env(cmd.Context(), "builder")
			if err != nil {
				return err
			}
			defer env.Close()
			conn, err := env.Dial("publisher")
			if err != nil {
				return err
			}
			defer conn.Close()
			stream, err := publisherv1.NewPublisherServiceClient(conn).Upload(cmd.Context())
			if err != nil {
				return err
			}
			if err := stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Header{Header: &h}}); err != nil {
				return uploadErr(stream, err)
			}
			p := c.newProgress("uploaded", h.Size)
			buf := make([]byte, chunkSize)
			for {
				n, rerr := io.ReadFull(f, buf)
				if n > 0 {
					if err := stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Chunk{Chunk: buf[:n]}}); err != nil {
						return uploadErr(stream, err)
					}
					p.add(n)
				}
				if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
					break
				}
				if rerr != nil {
					return fmt.Errorf("read %s: %w", args[0], rerr)
				}
			}
			resp, err := stream.CloseAndRecv()
			if status.Code(err) == codes.FailedPrecondition {
				// Not signed (yet): approvals missing or a rejection. The
				// signer's message says who acts next; a retry joins.
				p.finish()
				return denied("publish %s@%s: %s", h.Name, h.Version, status.Convert(err).Message())
			}
			if err != nil {
				return fmt.Errorf("publish %s@%s: %w", h.Name, h.Version, err)
			}
			p.finish()
			state := "published"
			if !resp.GetCreated() {
				state = "already published (same bytes)"
			}
			fmt.Fprintf(c.stdout, "%s@%s %s\n  digest    %s\n  size      %d bytes\n  channel   %s\n  log index %d\n",
				h.Name, h.Version, state, resp.GetDigest(), resp.GetSize(), h.Channel, resp.GetLogIndex())
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&h.Name, "name", "", "artifact name (required)")
	fl.StringVar(&h.Version, "version", "", "artifact version (required)")
	fl.StringVar(&h.Channel, "channel", "", "channel: dev, staging or prod (required)")
	fl.StringVar(&h.SourceRepo, "source-repo", "", "source repository URL")
	fl.StringVar(&h.SourceCommit, "source-commit", "", "source commit")
	for _, f := range []string{"name", "version", "channel"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}

// uploadErr gets the server's reason when a send fails: a failed Send
// returns io.EOF and the status comes from CloseAndRecv.
func uploadErr(stream publisherv1.PublisherService_UploadClient, err error) error {
	if errors.Is(err, io.EOF) {
		_, err = stream.CloseAndRecv()
	}
	return fmt.Errorf("upload: %w", err)
}
