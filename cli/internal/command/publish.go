package command

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/custody-dev/custody/libs/attest"
	libdigest "github.com/custody-dev/custody/libs/digest"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	"github.com/custody-dev/custody/libs/quote"
)

const chunkSize = 1 << 20

func (c *cli) publishCmd() *cobra.Command {
	var h publisherv1.UploadHeader
	var retries int
	var deps []string
	var sbomFile string
	var provenance string
	cmd := &cobra.Command{
		Use:   "publish FILE --name N --version V --channel C",
		Short: "Upload an artifact to the publisher, which stores, signs and logs it (as builder); an interrupted upload resumes",
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
			if provenance != "" {
				claimed, err := provenanceFile(provenance)
				if err != nil {
					return err
				}
				h.ResolvedDependencies = append(h.ResolvedDependencies, claimed...)
			}
			for _, d := range deps {
				rd, err := dependencyFlag(d)
				if err != nil {
					return err
				}
				h.ResolvedDependencies = append(h.ResolvedDependencies, rd)
			}
			var doc []byte
			if sbomFile != "" {
				if doc, _, _, err = readSBOMFile(sbomFile); err != nil {
					return err
				}
				h.SbomSize = int64(len(doc))
			}
			id := make([]byte, 16)
			rand.Read(id)
			h.UploadId = hex.EncodeToString(id)
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
			u := &uploader{client: publisherv1.NewPublisherServiceClient(conn), f: f, name: args[0], h: &h, sbom: doc,
				p: c.newProgress("uploaded", h.Size), log: c.stderr, retries: retries, backoff: 500 * time.Millisecond}
			resp, err := u.run(cmd.Context())
			u.p.finish()
			if status.Code(err) == codes.FailedPrecondition {
				// Not signed (yet): approvals missing or a rejection. The
				// signer's message says who acts next; a retry joins.
				return denied("publish %s@%s: %s", h.Name, h.Version, status.Convert(err).Message())
			}
			if err != nil {
				return fmt.Errorf("publish %s@%s: %w", h.Name, h.Version, err)
			}
			state := "published"
			if !resp.GetCreated() {
				state = "already published (same bytes)"
			}
			fmt.Fprintf(c.stdout, "%s@%s %s\n  digest    %s\n  size      %d bytes\n  channel   %s\n  log index %d\n",
				h.Name, h.Version, state, resp.GetDigest(), resp.GetSize(), h.Channel, resp.GetLogIndex())
			if att := resp.GetSbom(); att != nil {
				printAttached(c.stdout, h.Name, h.Version, att)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&h.Name, "name", "", "artifact name (required)")
	fl.StringVar(&h.Version, "version", "", "artifact version (required)")
	fl.StringVar(&h.Channel, "channel", "", "channel: dev, staging or prod (required)")
	fl.StringVar(&h.SourceRepo, "source-repo", "", "source repository URL")
	fl.StringVar(&h.SourceCommit, "source-commit", "", "source commit")
	fl.StringArrayVar(&deps, "depends-on", nil, "a Custody artifact this one was built from, NAME@VERSION=sha256:<hex> or sha256:<hex> (repeatable; becomes a resolved dependency of the provenance and a lineage edge)")
	fl.StringVar(&sbomFile, "sbom", "", "an SBOM of the artifact (CycloneDX 1.5/1.6 or SPDX 2.3 JSON, at most 8 MiB), parsed here first, then signed as an attestation about the artifact's digest, stored in the catalog and logged")
	fl.StringVar(&provenance, "provenance", "", "a JSON file {\"resolvedDependencies\": [...]} of SLSA resource descriptors (source, base images, dependency artifacts, patches, build environment) the build used; recorded as the builder's claims and lineage edges")
	fl.IntVar(&retries, "retries", 5, "how often an interrupted upload is resumed (with backoff) before giving up")
	for _, f := range []string{"name", "version", "channel"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}

// uploader sends one file, resuming from the offset the publisher confirms
// after an interruption. A resumed stream declares the whole file's digest,
// so the publisher refuses to store anything but this file's bytes.
type uploader struct {
	client  publisherv1.PublisherServiceClient
	f       *os.File
	name    string
	h       *publisherv1.UploadHeader
	p       *progress
	log     io.Writer
	retries int
	backoff time.Duration
	digest  string // of the whole file: once sent from 0, or at the first resume
	sbom    []byte // sent after the file's bytes; nil: none
	// sum hashes the file's bytes as an attempt from offset 0 reads them,
	// summed of them, so that the digest the publisher reports is checked
	// without a pass of its own, and a resume hashes only the rest.
	sum    hash.Hash
	summed int64
}

func (u *uploader) run(ctx context.Context) (*publisherv1.UploadResponse, error) {
	delay := u.backoff
	for attempt := 0; ; attempt++ {
		var offset int64
		var err error
		if attempt > 0 {
			offset, err = u.resumeAt(ctx)
		}
		var resp *publisherv1.UploadResponse
		if err == nil {
			resp, err = u.send(ctx, offset)
		}
		if err == nil {
			if u.digest == "" && u.sum != nil && u.summed == u.h.GetSize() {
				u.digest = "sha256:" + hex.EncodeToString(u.sum.Sum(nil))
			}
			if u.digest == "" {
				return nil, fmt.Errorf("the publisher stored %s, but %s was not hashed to check it", resp.GetDigest(), u.name)
			}
			if resp.GetDigest() != u.digest {
				return nil, fmt.Errorf("the publisher stored %s, but %s hashes to %s", resp.GetDigest(), u.name, u.digest)
			}
			return resp, nil
		}
		if attempt >= u.retries || ctx.Err() != nil || !retryable(err) {
			return nil, err
		}
		fmt.Fprintf(u.log, "\nupload interrupted: %s: %s; resuming in %s (attempt %d of %d)\n",
			status.Code(err), status.Convert(err).Message(), delay, attempt+1, u.retries)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// retryable: the connection or the publisher failed for now. Refusals of
// the request itself (invalid, too large, conflicting, not allowed, not
// signed) are final.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted, codes.Canceled, codes.DeadlineExceeded:
		return true
	case codes.ResourceExhausted:
		return !strings.Contains(status.Convert(err).Message(), "--max-artifact-size")
	}
	return false
}

// resumeAt asks how much the publisher holds; NotFound means from 0.
func (u *uploader) resumeAt(ctx context.Context) (int64, error) {
	if u.digest == "" {
		// The first attempt hashed what it read: hash only the rest.
		if u.sum == nil {
			u.sum, u.summed = sha256.New(), 0
		}
		if _, err := io.Copy(u.sum, io.NewSectionReader(u.f, u.summed, u.h.GetSize()-u.summed)); err != nil {
			return 0, fmt.Errorf("hash %s: %w", u.name, err)
		}
		u.summed = u.h.GetSize()
		u.digest = "sha256:" + hex.EncodeToString(u.sum.Sum(nil))
	}
	st, err := u.client.GetUploadStatus(ctx, &publisherv1.GetUploadStatusRequest{UploadId: u.h.GetUploadId()})
	switch status.Code(err) {
	case codes.OK:
		fmt.Fprintf(u.log, "resuming at byte %d of %d\n", st.GetOffset(), u.h.GetSize())
		return st.GetOffset(), nil
	case codes.NotFound:
		fmt.Fprintf(u.log, "the publisher kept nothing of the interrupted upload: starting again\n")
		return 0, nil
	}
	return 0, err
}

func (u *uploader) send(ctx context.Context, offset int64) (*publisherv1.UploadResponse, error) {
	h := proto.Clone(u.h).(*publisherv1.UploadHeader)
	h.Offset, h.Digest = offset, u.digest
	stream, err := u.client.Upload(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Header{Header: h}}); err != nil {
		return nil, uploadErr(stream, err)
	}
	u.p.set(offset)
	hashing := u.digest == "" && offset == 0
	if hashing {
		u.sum, u.summed = sha256.New(), 0
	}
	buf := make([]byte, chunkSize)
	r := io.NewSectionReader(u.f, offset, u.h.GetSize()-offset)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if hashing {
				u.sum.Write(buf[:n])
				u.summed += int64(n)
			}
			if err := stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Chunk{Chunk: buf[:n]}}); err != nil {
				return nil, uploadErr(stream, err)
			}
			u.p.add(n)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("read %s: %w", u.name, rerr)
		}
	}
	for rest := u.sbom; len(rest) > 0; {
		n := min(chunkSize, len(rest))
		if err := stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_SbomChunk{SbomChunk: rest[:n]}}); err != nil {
			return nil, uploadErr(stream, err)
		}
		rest = rest[n:]
	}
	return stream.CloseAndRecv()
}

// uploadErr gets the server's reason when a send fails: a failed Send
// returns io.EOF and the status comes from CloseAndRecv.
func uploadErr(stream publisherv1.PublisherService_UploadClient, err error) error {
	if errors.Is(err, io.EOF) {
		_, err = stream.CloseAndRecv()
	}
	return err
}

// provenanceFile reads a builder's provenance file (attest.ParseDependencies)
// into the resolved dependencies of an upload; the publisher checks the
// whole set again.
func provenanceFile(path string) ([]*publisherv1.ResourceDescriptor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--provenance: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, attest.MaxDependencyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("--provenance %s: %w", path, err)
	}
	parsed, err := attest.ParseDependencies(b)
	if err != nil {
		return nil, fmt.Errorf("--provenance %s: %v (want {\"resolvedDependencies\": [{\"uri\": ..., \"digest\": {...}, \"annotations\": {\"kind\": ...}}]})", path, err)
	}
	out := make([]*publisherv1.ResourceDescriptor, 0, len(parsed))
	for _, d := range parsed {
		out = append(out, &publisherv1.ResourceDescriptor{Uri: d.URI, Digest: d.Digest, Name: d.Name, Annotations: d.Annotations})
	}
	return out, nil
}

// dependencyFlag parses --depends-on [NAME@VERSION=]sha256:<hex> into an
// artifact dependency; the publisher checks it further.
func dependencyFlag(v string) (*publisherv1.ResourceDescriptor, error) {
	name, d, ok := strings.Cut(v, "=")
	if !ok {
		name, d = "", v
	}
	hexSum, err := libdigest.Parse(d)
	if err != nil {
		return nil, fmt.Errorf("--depends-on %q: want [NAME@VERSION=]sha256:<hex>: %v", quote.Prefix(v), err)
	}
	return &publisherv1.ResourceDescriptor{Name: name, Digest: map[string]string{"sha256": hexSum},
		Annotations: map[string]string{"kind": "artifact"}}, nil
}
