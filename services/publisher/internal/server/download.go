package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/services/publisher/internal/limits"
)

// Download streams a blob, or the range offset..offset+length of it. A read
// to the end from offset 0 is checked against the digest: corrupted bytes
// end the stream with DataLoss. It holds one of the caller's download slots
// and the blob's reader until the stream ends. A reader that stops reading
// (or crawls below the download progress rate) is cut with
// ResourceExhausted after at most two progress windows; its slot, file and
// buffer are released then (decision 0103).
func (s *Server) Download(req *publisherv1.DownloadRequest, stream publisherv1.PublisherService_DownloadServer) error {
	ctx := stream.Context()
	caller, _ := rpc.CallerID(ctx)
	release, err := s.downloads.Acquire(caller.String())
	if err != nil {
		return toStatus(err)
	}
	off, length := req.GetOffset(), req.GetLength()
	if off < 0 || length < 0 {
		release()
		return toStatus(fmt.Errorf("%w: offset %d, length %d: want 0 or more", errInvalid, off, length))
	}
	r, size, err := s.blobs.Open(ctx, req.GetDigest(), off)
	if err != nil {
		release()
		return toStatus(err)
	}
	if length > size-off {
		r.Close()
		release()
		return toStatus(fmt.Errorf("%w: range %d+%d past the end of the blob's %d bytes", errInvalid, off, length, size))
	}
	var src io.Reader = r
	if length > 0 && off+length < size {
		src = io.LimitReader(r, length)
	}
	// The sending goroutine owns the reader and the slot: after a stall it
	// outlives this handler until the ended stream fails its Send.
	err = limits.Send(ctx, s.limits.SendProgress, func(sent func(int)) error {
		defer release()
		defer r.Close()
		// Send copies the message out before returning, so one buffer
		// serves the whole stream.
		buf := make([]byte, ChunkSize)
		first := true
		for {
			n, rerr := io.ReadFull(src, buf)
			if n > 0 || first {
				msg := &publisherv1.DownloadResponse{Chunk: buf[:n]}
				if first {
					msg.Size, first = size, false
				}
				if err := stream.Send(msg); err != nil {
					return err
				}
				sent(n)
			}
			if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
				return nil
			}
			if rerr != nil {
				return s.integrity(ctx, rerr)
			}
		}
	})
	if errors.Is(err, limits.ErrStalled) {
		s.logger.WarnContext(ctx, "download aborted", slog.String("caller", caller.String()), slog.String("digest", req.GetDigest()), slog.Any("error", err))
		return toStatus(err)
	}
	return err
}
