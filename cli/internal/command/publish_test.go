package command

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
)

// fakePublisher receives uploads in memory: it keeps what each stream
// sent, breaks the first stream after cutAfter bytes (0: never) and reports
// the digest of what it holds, or report if set.
type fakePublisher struct {
	publisherv1.PublisherServiceClient
	held     []byte
	cutAfter int
	cuts     int
	report   string
}

func (p *fakePublisher) Upload(ctx context.Context, _ ...grpc.CallOption) (grpc.ClientStreamingClient[publisherv1.UploadRequest, publisherv1.UploadResponse], error) {
	return &fakeUpload{p: p}, nil
}

func (p *fakePublisher) GetUploadStatus(context.Context, *publisherv1.GetUploadStatusRequest, ...grpc.CallOption) (*publisherv1.GetUploadStatusResponse, error) {
	return &publisherv1.GetUploadStatusResponse{Offset: int64(len(p.held))}, nil
}

type fakeUpload struct {
	grpc.ClientStream
	p      *fakePublisher
	header *publisherv1.UploadHeader
	broken bool
}

func (u *fakeUpload) Send(m *publisherv1.UploadRequest) error {
	if h := m.GetHeader(); h != nil {
		u.header = h
		u.p.held = u.p.held[:h.GetOffset()]
		return nil
	}
	if u.p.cutAfter > 0 && u.p.cuts == 0 && len(u.p.held) >= u.p.cutAfter {
		u.p.cuts++
		u.broken = true
		return io.EOF
	}
	u.p.held = append(u.p.held, m.GetChunk()...)
	return nil
}

func (u *fakeUpload) CloseAndRecv() (*publisherv1.UploadResponse, error) {
	if u.broken {
		return nil, status.Error(codes.Unavailable, "connection cut")
	}
	sum := sha256.Sum256(u.p.held)
	d := "sha256:" + hex.EncodeToString(sum[:])
	if u.header.GetDigest() != "" && u.header.GetDigest() != d {
		return nil, status.Error(codes.InvalidArgument, "digest mismatch")
	}
	if u.p.report != "" {
		d = u.p.report
	}
	return &publisherv1.UploadResponse{Digest: d, Size: int64(len(u.p.held))}, nil
}

// TestPublishChecksTheReportedDigest: the digest the publisher reports is
// checked against the file's, hashed as it is read, also when nothing was
// interrupted; a resume declares the whole file's digest.
func TestPublishChecksTheReportedDigest(t *testing.T) {
	data := make([]byte, 5*chunkSize+123)
	rand.Read(data)
	path := filepath.Join(t.TempDir(), "artifact.bin")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	want := "sha256:" + hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		name     string
		cutAfter int
		report   string
		fail     string
	}{
		{"uninterrupted", 0, "", ""},
		{"resumed", 2 * chunkSize, "", ""},
		{"uninterrupted, another digest reported", 0, "sha256:" + strings.Repeat("0", 64), "hashes to " + want},
		{"resumed, another digest reported", 3 * chunkSize, "sha256:" + strings.Repeat("0", 64), "hashes to " + want},
	} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		pub := &fakePublisher{cutAfter: tc.cutAfter, report: tc.report}
		var log bytes.Buffer
		u := &uploader{client: pub, f: f, name: path, log: &log, retries: 2,
			h: &publisherv1.UploadHeader{Name: "a", Version: "1", Channel: "dev", Size: int64(len(data)), UploadId: strings.Repeat("u", 32)}}
		resp, err := u.run(t.Context())
		f.Close()
		switch {
		case tc.fail == "" && (err != nil || resp.GetDigest() != want || !bytes.Equal(pub.held, data)):
			t.Errorf("%s: %v %v", tc.name, resp, err)
		case tc.fail != "" && (err == nil || !strings.Contains(err.Error(), tc.fail)):
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.fail)
		case tc.cutAfter > 0 && pub.cuts != 1:
			t.Errorf("%s: the upload was not cut", tc.name)
		}
	}
}
