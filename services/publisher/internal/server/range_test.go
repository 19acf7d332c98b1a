package server_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
)

func downloadRange(t *testing.T, c publisherv1.PublisherServiceClient, digest string, off, length int64) ([]byte, int64, error) {
	stream, err := c.Download(t.Context(), &publisherv1.DownloadRequest{Digest: digest, Offset: off, Length: length})
	if err != nil {
		return nil, 0, err
	}
	var out bytes.Buffer
	var size int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out.Bytes(), size, nil
		}
		if err != nil {
			return nil, 0, err
		}
		if msg.GetSize() != 0 {
			size = msg.GetSize()
		}
		out.Write(msg.GetChunk())
	}
}

func TestRangedDownload(t *testing.T) {
	f := start(t)
	data := make([]byte, 3<<20+5)
	rand.Read(data)
	resp, err := upload(t.Context(), f.client(t, "/builder/ci"), header("1", 0), bytes.NewReader(data), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	edge := f.client(t, "/edge/dev")
	n := int64(len(data))
	for _, tt := range []struct{ off, length int64 }{
		{0, 0}, {0, 1}, {1, 0}, {1 << 20, 1 << 20}, {n - 1, 1}, {n - 1, 0}, {n, 0}, {12345, n - 12345}, {0, n},
	} {
		got, size, err := downloadRange(t, edge, resp.GetDigest(), tt.off, tt.length)
		end := n
		if tt.length > 0 {
			end = tt.off + tt.length
		}
		if err != nil || size != n || !bytes.Equal(got, data[tt.off:end]) {
			t.Errorf("offset %d length %d: %d bytes, size %d, %v; want bytes %d..%d of %d", tt.off, tt.length, len(got), size, err, tt.off, end, n)
		}
	}
	for _, tt := range []struct{ off, length int64 }{
		{-1, 0}, {0, -1}, {n + 1, 0}, {n, 1}, {n - 1, 2}, {0, n + 1}, {1 << 62, 1 << 62},
	} {
		if _, _, err := downloadRange(t, edge, resp.GetDigest(), tt.off, tt.length); status.Code(err) != codes.InvalidArgument {
			t.Errorf("offset %d length %d: %v, want InvalidArgument", tt.off, tt.length, err)
		}
	}
}

// Two builders race to bind one version to different bytes: exactly one
// wins, every other gets AlreadyExists naming the winner's digest.
func TestRacingUploadsOfOneVersion(t *testing.T) {
	f := start(t)
	c := f.client(t, "/builder/ci")
	const racers, rounds = 4, 10
	for round := range rounds {
		version := fmt.Sprintf("race-%d", round)
		var wg sync.WaitGroup
		results := make([]error, racers)
		digests := make([]string, racers)
		start := make(chan struct{})
		for i := range racers {
			data := make([]byte, 64<<10)
			rand.Read(data)
			digests[i] = digestOf(data)
			wg.Go(func() {
				<-start
				_, results[i] = upload(t.Context(), c, header(version, 0), bytes.NewReader(data), 16<<10)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range results {
			if err == nil {
				if winner >= 0 {
					t.Fatalf("%s: racers %d and %d both bound it", version, winner, i)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatalf("%s: nobody won: %v", version, results)
		}
		for i, err := range results {
			if i != winner && (status.Code(err) != codes.AlreadyExists || !bytes.Contains([]byte(err.Error()), []byte(digests[winner]))) {
				t.Errorf("%s: loser %d: %v, want AlreadyExists naming %s", version, i, err, digests[winner])
			}
		}
	}
}
