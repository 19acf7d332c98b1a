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

// Open starts the publisher's Download stream of the blob and returns its
// bytes and the size the first message announces; the reader ends with an
// error if the stream does (the publisher reports corruption as DataLoss).
func (p Publisher) Open(ctx context.Context, digest string) (io.ReadCloser, int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := p.Client.Download(ctx, &publisherv1.DownloadRequest{Digest: digest})
	if err != nil {
		cancel()
		return nil, 0, originErr(digest, err)
	}
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		cancel()
		return nil, 0, fmt.Errorf("%w: %s: the publisher ended the download without a first message", ErrOriginDown, digest)
	}
	if err != nil {
		cancel()
		return nil, 0, originErr(digest, err)
	}
	return &download{stream: stream, cancel: cancel, digest: digest, buf: first.GetChunk()}, first.GetSize(), nil
}

// download is the bytes of one Download stream.
type download struct {
	stream publisherv1.PublisherService_DownloadClient
	cancel context.CancelFunc
	digest string
	buf    []byte
	err    error
}

func (d *download) Read(p []byte) (int, error) {
	for len(d.buf) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		msg, err := d.stream.Recv()
		if errors.Is(err, io.EOF) {
			d.err = io.EOF
			continue
		}
		if err != nil {
			d.err = originErr(d.digest, err)
			continue
		}
		d.buf = msg.GetChunk()
	}
	n := copy(p, d.buf)
	d.buf = d.buf[n:]
	return n, nil
}

func (d *download) Close() error { d.cancel(); return nil }

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
