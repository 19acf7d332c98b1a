package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	"github.com/custody-dev/custody/services/publisher/internal/limits"
	"github.com/custody-dev/custody/services/publisher/internal/server"
)

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(entries)
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// leftovers lists the files an upload may leave: store temp files and
// partial uploads.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	for _, d := range []string{"tmp", "partial"} {
		entries, _ := os.ReadDir(filepath.Join(dir, d))
		for _, e := range entries {
			files = append(files, filepath.Join(d, e.Name()))
		}
	}
	return files
}

func sendHeader(t *testing.T, stream publisherv1.PublisherService_UploadClient, h *publisherv1.UploadHeader) {
	t.Helper()
	if err := stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Header{Header: h}}); err != nil {
		t.Errorf("send header: %v", err)
	}
}

func sendChunk(stream publisherv1.PublisherService_UploadClient, b []byte) error {
	return stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Chunk{Chunk: b}})
}

// ATTACKS.md #34: one builder opens a thousand uploads that send a header
// and a little data, then nothing.
func TestThousandStalledUploadsFromOneCaller(t *testing.T) {
	const stalled, perCaller, window = 1000, 8, time.Second
	f := startWith(t, func(s *server.Server) {
		l := server.DefaultLimits()
		l.UploadsPerCaller, l.UploadsTotal = perCaller, 32
		l.Progress = limits.Progress{Window: window, MinRate: 0}
		s.SetLimits(l)
	})
	evil, good := f.client(t, "/builder/evil"), f.client(t, "/builder/ci")
	// Warm up both connections so their sockets count in the baseline.
	if _, err := upload(t.Context(), good, header("warm", 0), strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	evil.GetUploadStatus(t.Context(), &publisherv1.GetUploadStatusRequest{UploadId: strings.Repeat("w", 16)})
	fds0, heap0 := openFDs(t), heapInUse()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	codesSeen := make(chan error, stalled)
	var wg sync.WaitGroup
	for i := range stalled {
		wg.Go(func() {
			stream, err := evil.Upload(ctx)
			if err != nil {
				codesSeen <- err
				return
			}
			h := header(fmt.Sprintf("stall-%d", i), 1<<20)
			if i%2 == 0 {
				h.UploadId = fmt.Sprintf("stalled-upload-%06d", i) // resumable: bytes go to a partial file
			}
			if stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Header{Header: h}}) == nil {
				_ = sendChunk(stream, make([]byte, 1000))
			}
			// Never close the stream: wait for the server to end it.
			codesSeen <- stream.RecvMsg(new(publisherv1.UploadResponse))
		})
	}
	// All but perCaller are refused at once, naming the limit.
	refused := 0
	for refused < stalled-perCaller {
		select {
		case err := <-codesSeen:
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-uploads-per-caller") {
				t.Fatalf("an upload over the per-caller limit: %v, want ResourceExhausted naming --max-uploads-per-caller", err)
			}
			refused++
		case <-time.After(window / 2):
			t.Fatalf("only %d of %d uploads refused within half a progress window", refused, stalled-perCaller)
		}
	}
	// While perCaller uploads stall, other builders are served.
	for i := range 3 {
		data := make([]byte, 256<<10)
		rand.Read(data)
		if _, err := upload(t.Context(), good, header(fmt.Sprintf("meanwhile-%d", i), int64(len(data))), bytes.NewReader(data), 64<<10); err != nil {
			t.Fatalf("another builder during the attack: %v", err)
		}
	}
	fdsDuring, heapDuring := openFDs(t), heapInUse()
	t.Logf("during: %d open fds (baseline %d), heap +%d KiB", fdsDuring, fds0, (heapDuring-heap0)>>10)
	if fdsDuring-fds0 > perCaller+4 {
		t.Errorf("%d more fds open during the attack, want at most about %d (one file per admitted upload)", fdsDuring-fds0, perCaller)
	}
	if heapDuring-heap0 > 64<<20 {
		t.Errorf("heap grew by %d MiB during the attack", (heapDuring-heap0)>>20)
	}
	// The admitted ones are cut after the progress timeout, saying why.
	for range perCaller {
		select {
		case err := <-codesSeen:
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--upload-progress-timeout") {
				t.Errorf("a stalled upload: %v, want ResourceExhausted naming --upload-progress-timeout", err)
			}
		case <-time.After(4 * window):
			t.Fatal("a stalled upload was not cut after the progress timeout")
		}
	}
	wg.Wait()
	// Everything is released: files, descriptors, memory, slots.
	deadline := time.Now().Add(5 * time.Second)
	for {
		left, fds := leftovers(t, f.dir), openFDs(t)
		if len(left) == 0 && fds <= fds0+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the timeout: files left %v, %d fds open (baseline %d)", left, fds, fds0)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if grown := heapInUse() - heap0; grown > 8<<20 {
		t.Errorf("heap still %d MiB above the baseline after the timeout", grown>>20)
	}
	if _, err := upload(t.Context(), evil, header("after", 0), strings.NewReader("ok"), 2); err != nil {
		t.Errorf("the caller's slots did not come back: %v", err)
	}
}

func TestCrawlingUploadIsCut(t *testing.T) {
	f := startWith(t, func(s *server.Server) {
		l := server.DefaultLimits()
		l.Progress = limits.Progress{Window: time.Second, MinRate: 100}
		s.SetLimits(l)
	})
	for _, id := range []string{"", "crawling-upload-0001"} {
		stream, err := f.client(t, "/builder/ci").Upload(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		h := header("crawl"+id, 0)
		h.UploadId = id
		sendHeader(t, stream, h)
		// One byte every 50 ms is 20 B/s, below the 100 B/s required.
		var err2 error
		for range 200 {
			if err2 = sendChunk(stream, []byte{'x'}); err2 != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		err = stream.RecvMsg(new(publisherv1.UploadResponse))
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "the minimum is 100") {
			t.Errorf("upload id %q: crawling upload: %v (send: %v), want ResourceExhausted naming the minimum", id, err, err2)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(leftovers(t, f.dir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if left := leftovers(t, f.dir); len(left) > 0 {
		t.Errorf("a cut upload left %v", left)
	}
}

func TestMaxArtifactSize(t *testing.T) {
	f := startWith(t, func(s *server.Server) {
		l := server.DefaultLimits()
		l.MaxSize = 1000
		s.SetLimits(l)
	})
	c := f.client(t, "/builder/ci")
	for name, tt := range map[string]struct {
		h    *publisherv1.UploadHeader
		size int
	}{
		"declared too large":  {header("declared", 1001), 0},
		"streamed too large":  {header("streamed", 0), 1001},
		"resumable too large": {&publisherv1.UploadHeader{Name: "app", Version: "resumable", Channel: "dev", UploadId: "too-large-upload-01"}, 1001},
	} {
		_, err := upload(t.Context(), c, tt.h, bytes.NewReader(make([]byte, tt.size)), 100)
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-artifact-size") {
			t.Errorf("%s: %v, want ResourceExhausted naming --max-artifact-size", name, err)
		}
	}
	if _, err := upload(t.Context(), c, header("fits", 1000), bytes.NewReader(make([]byte, 1000)), 100); err != nil {
		t.Errorf("an artifact at the limit: %v", err)
	}
	if left := leftovers(t, f.dir); len(left) > 0 {
		t.Errorf("refused uploads left %v", left)
	}
}

func TestDownloadSlotsPerCaller(t *testing.T) {
	f := startWith(t, func(s *server.Server) {
		l := server.DefaultLimits()
		l.DownloadsPerCaller, l.DownloadsTotal = 1, 4
		s.SetLimits(l)
	})
	data := make([]byte, 8<<20)
	resp, err := upload(t.Context(), f.client(t, "/builder/ci"), header("1", 0), bytes.NewReader(data), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	edge := f.client(t, "/edge/a")
	// A reader that takes one message and stops holds its slot.
	stream, err := edge.Download(t.Context(), &publisherv1.DownloadRequest{Digest: resp.GetDigest()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := download(t, edge, resp.GetDigest()); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-downloads-per-caller") {
		t.Errorf("a second download of the same edge: %v, want ResourceExhausted naming the limit", err)
	}
	if got, err := download(t, f.client(t, "/edge/b"), resp.GetDigest()); err != nil || len(got) != len(data) {
		t.Errorf("another edge: %d bytes, %v", len(got), err)
	}
}

// A message larger than one chunk and its framing is refused by gRPC
// before the handler sees it; one just over a chunk by the handler.
func TestMessageSizeLimits(t *testing.T) {
	f := start(t)
	c := f.client(t, "/builder/ci")
	for _, tt := range []struct {
		chunk int
		want  codes.Code
	}{{server.ChunkSize + 1, codes.InvalidArgument}, {server.MaxRecvMsgSize + 1, codes.ResourceExhausted}, {4 << 20, codes.ResourceExhausted}} {
		_, err := upload(t.Context(), c, header(fmt.Sprint("msg-", tt.chunk), 0), bytes.NewReader(make([]byte, tt.chunk)), tt.chunk)
		if status.Code(err) != tt.want {
			t.Errorf("chunk of %d bytes: %v, want %s", tt.chunk, err, tt.want)
		}
	}
	if left := leftovers(t, f.dir); len(left) > 0 {
		t.Errorf("refused uploads left %v", left)
	}
}

// An edge that opens a download, takes its first message and stops reading
// does not hold the publisher's file, buffer and download slot for longer
// than the download progress timeout (decision 0103).
func TestStalledDownloadIsCut(t *testing.T) {
	const window = time.Second
	f := startWith(t, func(s *server.Server) {
		l := server.DefaultLimits()
		l.DownloadsPerCaller, l.DownloadsTotal = 1, 4
		l.SendProgress = limits.Progress{Window: window, MinRate: 0, What: "download"}
		s.SetLimits(l)
	})
	// More than every flow-control window and buffer between the two ends
	// can hold, so the publisher's Send blocks.
	const size = 48 << 20
	resp, err := upload(t.Context(), f.client(t, "/builder/ci"), header("big", size), &zeros{left: size}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	edge := f.client(t, "/edge/a")
	if got, err := download(t, edge, resp.GetDigest()); err != nil || len(got) != size {
		t.Fatalf("a download that reads: %d bytes, %v", len(got), err)
	}
	fds0 := openFDs(t)
	stream, err := edge.Download(t.Context(), &publisherv1.DownloadRequest{Digest: resp.GetDigest()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	// While it stalls it holds its slot (and the blob's file).
	if _, err := download(t, edge, resp.GetDigest()); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-downloads-per-caller") {
		t.Fatalf("a second download during the stall: %v, want ResourceExhausted naming --max-downloads-per-caller", err)
	}
	// After the timeout both are released: the same edge downloads again
	// and the descriptors are back at the baseline.
	deadline := time.Now().Add(30 * window)
	for {
		got, err := download(t, edge, resp.GetDigest())
		if err == nil && len(got) == size && openFDs(t) <= fds0 {
			break
		}
		if err != nil && (status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-downloads-per-caller")) {
			t.Fatalf("a download after the stall: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stalled download still holds its slot or file after %s: %v, %d fds (baseline %d)", 30*window, err, openFDs(t), fds0)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The stalled reader, reading again, gets what was in flight and then
	// the reason, never the whole blob.
	var n int
	for {
		msg, err := stream.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--download-progress-timeout") {
				t.Errorf("the stalled download ends with %v, want ResourceExhausted naming --download-progress-timeout", err)
			}
			break
		}
		n += len(msg.GetChunk())
	}
	if n >= size {
		t.Errorf("the stalled reader got all %d bytes", n)
	}
	t.Logf("the stalled reader had %d MiB in flight", n>>20)
}
