package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/artifact"
	"github.com/custody-dev/custody/libs/digest"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/services/publisher/internal/bindings"
	"github.com/custody-dev/custody/services/publisher/internal/limits"
	"github.com/custody-dev/custody/services/publisher/internal/resume"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

type receiver = limits.Receiver[*publisherv1.UploadRequest]

func chunkLen(m *publisherv1.UploadRequest) int { return len(m.GetChunk()) + len(m.GetSbomChunk()) }

// chunk checks one data message of an upload that has held so far bytes.
func (s *Server) chunk(msg *publisherv1.UploadRequest, held int64, h *publisherv1.UploadHeader) ([]byte, error) {
	if msg.GetHeader() != nil {
		return nil, fmt.Errorf("%w: a second header after the data started", errInvalid)
	}
	c := msg.GetChunk()
	if len(c) > ChunkSize {
		return nil, fmt.Errorf("%w: chunk of %d bytes, limit %d", errInvalid, len(c), ChunkSize)
	}
	held += int64(len(c))
	if h.GetSize() > 0 && held > h.GetSize() {
		return nil, fmt.Errorf("%w: more bytes than the declared size %d", errInvalid, h.GetSize())
	}
	if held > s.limits.MaxSize {
		return nil, fmt.Errorf("%w: more than %d bytes", sealed.ErrTooLarge, s.limits.MaxSize)
	}
	return c, nil
}

// streamReader turns the chunks of a non-resumable upload into a reader for
// the blob store, checking sizes and, when the header declares one, the
// digest: a failed check is an error before EOF, so the store keeps nothing.
type streamReader struct {
	s     *Server
	ctx   context.Context
	rx    *receiver
	h     *publisherv1.UploadHeader
	buf   []byte
	total int64
	sum   hash.Hash // nil unless the header declares a digest
	// trailer is the first SBOM chunk, which ends the artifact's bytes.
	trailer *publisherv1.UploadRequest
}

func (r *streamReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.rx.Next(r.ctx)
		if errors.Is(err, io.EOF) {
			if err := checkEnd(r.h, r.total, r.sum); err != nil {
				return 0, err
			}
			return 0, io.EOF
		}
		if err != nil {
			return 0, err
		}
		if isSBOMChunk(msg) {
			if err := checkEnd(r.h, r.total, r.sum); err != nil {
				return 0, err
			}
			r.trailer = msg
			return 0, io.EOF
		}
		c, err := r.s.chunk(msg, r.total, r.h)
		if err != nil {
			return 0, err
		}
		r.total += int64(len(c))
		if r.sum != nil {
			r.sum.Write(c)
		}
		r.buf = c
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// checkEnd refuses a complete stream that is shorter than declared or hashes
// to another digest than declared.
func checkEnd(h *publisherv1.UploadHeader, total int64, sum hash.Hash) error {
	if h.GetSize() > 0 && total != h.GetSize() {
		return fmt.Errorf("%w: received %d bytes, the header declared %d", errInvalid, total, h.GetSize())
	}
	if sum != nil {
		if got := "sha256:" + hex.EncodeToString(sum.Sum(nil)); got != h.GetDigest() {
			return fmt.Errorf("%w: the bytes hash to %s, the header declared %s: nothing was stored; upload again from offset 0", errInvalid, got, h.GetDigest())
		}
	}
	return nil
}

func (s *Server) validateHeader(h *publisherv1.UploadHeader) error {
	var errs []string
	if !artifact.ValidName(h.GetName()) {
		errs = append(errs, fmt.Sprintf("name %q: want 1-%d letters, digits, '.', '_', '-' or '/', starting with a letter or digit", quote.Prefix(h.GetName()), artifact.MaxNameLen))
	}
	if !artifact.ValidVersion(h.GetVersion()) {
		errs = append(errs, fmt.Sprintf("version %q: want 1-%d letters, digits, '.', '_', '-' or '+', starting with a letter or digit", quote.Prefix(h.GetVersion()), artifact.MaxVersionLen))
	}
	if !artifact.ValidChannel(h.GetChannel()) {
		errs = append(errs, fmt.Sprintf("channel %q: required, up to %d letters, digits, '.', '_' or '-'", quote.Prefix(h.GetChannel()), artifact.MaxChannelLen))
	}
	if h.GetSize() < 0 {
		errs = append(errs, fmt.Sprintf("size %d: want 0 (unknown) or more", h.GetSize()))
	}
	if len(h.GetSourceRepo()) > 1024 || len(h.GetSourceCommit()) > 256 {
		errs = append(errs, "source_repo or source_commit too long")
	}
	if id := h.GetUploadId(); id != "" && !resume.ValidID(id) {
		errs = append(errs, fmt.Sprintf("upload_id %q: want 16-64 letters, digits, '-' or '_'", id))
	}
	if h.GetOffset() < 0 || h.GetOffset() > 0 && (h.GetUploadId() == "" || h.GetDigest() == "") {
		errs = append(errs, fmt.Sprintf("offset %d: want 0, or the offset GetUploadStatus returned with the upload_id and the whole artifact's digest", h.GetOffset()))
	}
	if n := h.GetSbomSize(); n != 0 && validSBOMSize(n) != nil {
		errs = append(errs, fmt.Sprintf("sbom_size %d: want 0 (no SBOM) or 1 to %d bytes", n, sbom.MaxBytes))
	}
	if h.GetSize() > 0 && h.GetOffset() > h.GetSize() {
		errs = append(errs, fmt.Sprintf("offset %d beyond the declared size %d", h.GetOffset(), h.GetSize()))
	}
	if d := h.GetDigest(); d != "" {
		if _, err := digest.Parse(d); err != nil {
			errs = append(errs, "digest: "+err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", errInvalid, strings.Join(errs, "; "))
	}
	if h.GetSize() > s.limits.MaxSize {
		return fmt.Errorf("%w: declared size %d is more than %d bytes", sealed.ErrTooLarge, h.GetSize(), s.limits.MaxSize)
	}
	return nil
}

// Upload stores, binds, signs and records one artifact. It holds one of the
// caller's upload slots until it returns.
func (s *Server) Upload(stream publisherv1.PublisherService_UploadServer) error {
	ctx := stream.Context()
	started := s.now()
	caller, _ := rpc.CallerID(ctx)
	release, err := s.uploads.Acquire(caller.String())
	if err != nil {
		s.logger.WarnContext(ctx, "upload refused", slog.String("caller", caller.String()), slog.Any("error", err))
		return toStatus(err)
	}
	defer release()
	rx := limits.NewReceiver(s.limits.Progress, stream.Recv, chunkLen, nil)
	defer rx.Close()
	first, err := rx.Next(ctx)
	if err != nil {
		return s.uploadErr(ctx, caller, fmt.Errorf("%w: read header: %w", errInvalid, err))
	}
	h := first.GetHeader()
	if h == nil {
		return toStatus(fmt.Errorf("%w: the first message must be the header (name, version, channel)", errInvalid))
	}
	if err := s.validateHeader(h); err != nil {
		return toStatus(err)
	}
	if _, err := dependencies(h); err != nil {
		return toStatus(err)
	}
	var digest string
	var size int64
	var trailer *publisherv1.UploadRequest
	if h.GetUploadId() != "" && s.resume != nil {
		digest, size, trailer, err = s.spool(ctx, caller, h, rx)
	} else {
		if h.GetOffset() > 0 {
			return toStatus(fmt.Errorf("%w: this publisher does not resume uploads: upload from offset 0", resume.ErrNotFound))
		}
		r := &streamReader{s: s, ctx: ctx, rx: rx, h: h}
		if h.GetDigest() != "" {
			r.sum = sha256.New()
		}
		digest, size, err = s.blobs.Put(ctx, r, s.limits.MaxSize)
		trailer = r.trailer
	}
	if err != nil {
		return s.uploadErr(ctx, caller, err)
	}
	// The SBOM, if any, is received and parsed before the artifact is
	// bound: a bad one refuses the upload (the stored blob stays unbound).
	var doc []byte
	var format string
	switch {
	case h.GetSbomSize() > 0:
		release, err := s.sboms.Acquire(caller.String())
		if err != nil {
			return toStatus(err)
		}
		defer release()
		var first []byte
		// Without a trailer the stream has ended: the receiver is not
		// asked again.
		ended := trailer == nil
		if trailer != nil {
			first = trailer.GetSbomChunk()
		}
		doc, err = readSBOM(h.GetSbomSize(), first, func() ([]byte, error) {
			if ended {
				return nil, io.EOF
			}
			msg, err := rx.Next(ctx)
			if err != nil {
				ended = errors.Is(err, io.EOF)
				return nil, err
			}
			if !isSBOMChunk(msg) {
				return nil, fmt.Errorf("%w: artifact data after the SBOM started", errInvalid)
			}
			return msg.GetSbomChunk(), nil
		})
		if err != nil {
			return s.uploadErr(ctx, caller, err)
		}
		if format, err = s.parseSBOM(ctx, doc); err != nil {
			return toStatus(err)
		}
	case trailer != nil:
		return toStatus(fmt.Errorf("%w: SBOM chunks without sbom_size in the header", errInvalid))
	}
	var created bool
	bind := func() (err error) {
		created, err = s.bindings.Bind(bindings.Binding{Name: h.GetName(), Version: h.GetVersion(), Digest: digest, Size: size})
		return err
	}
	if s.retention != nil {
		err = s.retention.BindStored(ctx, digest, bind)
	} else {
		err = bind()
	}
	if err != nil {
		return toStatus(err)
	}
	resp, err := s.complete(ctx, h, digest, size, caller, started, created)
	if err != nil {
		return toStatus(err)
	}
	if doc != nil {
		att, err := s.attachSBOM(ctx, caller, h.GetName(), h.GetVersion(), doc, format)
		if err != nil {
			s.logger.WarnContext(ctx, "artifact published, SBOM not attached", slog.String("name", h.GetName()), slog.String("version", h.GetVersion()),
				slog.String("digest", digest), slog.Any("error", err))
			return toStatus(fmt.Errorf("the artifact is published (%s), its SBOM is not: %w; publish again, or attach it with custody sbom attach", digest, err))
		}
		s.logSBOM(ctx, h.GetName(), h.GetVersion(), caller, att)
		resp.Sbom = att
	}
	s.logger.InfoContext(ctx, "upload", slog.String("name", h.GetName()), slog.String("version", h.GetVersion()),
		slog.String("digest", digest), slog.Int64("size", size), slog.String("caller", caller.String()),
		slog.Bool("created", resp.GetCreated()), slog.Int64("resumed_at", h.GetOffset()), slog.Duration("duration", s.now().Sub(started)))
	return stream.SendAndClose(resp)
}

func (s *Server) uploadErr(ctx context.Context, caller spiffeid.ID, err error) error {
	if errors.Is(err, limits.ErrStalled) {
		s.logger.WarnContext(ctx, "upload aborted", slog.String("caller", caller.String()), slog.Any("error", err))
	}
	return toStatus(err)
}

// spool receives a resumable upload into its partial file, sealed as it
// arrives, then hands the sealed file to the blob store. A stream that breaks off (the client or
// its connection went away, or a resumed stream took over) leaves the bytes
// for a resume; one that is refused or falls behind the progress rate
// leaves nothing.
func (s *Server) spool(ctx context.Context, caller spiffeid.ID, h *publisherv1.UploadHeader, rx *receiver) (string, int64, *publisherv1.UploadRequest, error) {
	u, err := s.resume.Begin(ctx, caller.String(), h.GetUploadId(), h.GetOffset())
	if err != nil {
		return "", 0, nil, err
	}
	rx.SetStop(u.Stop())
	var trailer *publisherv1.UploadRequest
	for {
		msg, err := rx.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil && isSBOMChunk(msg) {
			trailer = msg
			break
		}
		if err != nil {
			if errors.Is(err, limits.ErrStalled) {
				u.Discard()
			} else {
				u.Suspend()
			}
			return "", 0, nil, err
		}
		c, err := s.chunk(msg, u.Size(), h)
		if err == nil {
			_, err = u.Write(c)
		}
		if err != nil {
			u.Discard()
			return "", 0, nil, err
		}
	}
	if h.GetDigest() != "" && u.Digest() != h.GetDigest() {
		got := u.Digest()
		u.Discard()
		return "", 0, nil, fmt.Errorf("%w: the bytes hash to %s, the header declared %s: nothing was stored; upload again from offset 0", errInvalid, got, h.GetDigest())
	}
	if err := checkEnd(h, u.Size(), nil); err != nil {
		u.Discard()
		return "", 0, nil, err
	}
	// The partial is already sealed in the store's format: the store takes
	// it as the blob's ciphertext, without a second pass over the bytes.
	b, err := u.Finish()
	if err != nil {
		u.Discard()
		return "", 0, nil, err
	}
	digest, size, err := s.blobs.PutSealed(ctx, b)
	if err != nil {
		u.Suspend() // a store failure: the builder may resume once it is fixed
		return "", 0, nil, err
	}
	u.Discard()
	return digest, size, trailer, nil
}

// GetUploadStatus reports how much of the caller's interrupted upload is
// held. Upload ids are scoped to their caller: another caller's id is
// NotFound.
func (s *Server) GetUploadStatus(ctx context.Context, req *publisherv1.GetUploadStatusRequest) (*publisherv1.GetUploadStatusResponse, error) {
	if s.resume == nil {
		return nil, toStatus(fmt.Errorf("%w: this publisher does not resume uploads", resume.ErrNotFound))
	}
	caller, _ := rpc.CallerID(ctx)
	n, err := s.resume.Status(caller.String(), req.GetUploadId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &publisherv1.GetUploadStatusResponse{Offset: n}, nil
}
