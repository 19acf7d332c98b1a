package server

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	"github.com/custody-dev/custody/services/edge/internal/cache"
)

// ErrOriginDown means the publisher could not be reached.
var ErrOriginDown = errors.New("origin unavailable")

// Publisher fetches blobs from the publisher's Download stream.
type Publisher struct {
	Client publisherv1.PublisherServiceClient
}

var _ cache.Origin = Publisher{}

// Fetch writes the blob's bytes to w; it fails if the stream ends with an
// error (the publisher reports corruption as DataLoss at the end).
func (p Publisher) Fetch(ctx context.Context, digest string, w io.Writer) error {
	stream, err := p.Client.Download(ctx, &publisherv1.DownloadRequest{Digest: digest})
	if err != nil {
		return originErr(digest, err)
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return originErr(digest, err)
		}
		if _, err := w.Write(msg.GetChunk()); err != nil {
			return err
		}
	}
}

func originErr(digest string, err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.NotFound:
		return fmt.Errorf("%w: %s", cache.ErrNotFound, digest)
	case codes.DataLoss:
		return fmt.Errorf("%w for %s: the origin reports: %s", cache.ErrIntegrity, digest, st.Message())
	}
	return fmt.Errorf("%w: %s: %s", ErrOriginDown, st.Code(), st.Message())
}
