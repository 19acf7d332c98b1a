package e2e

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
)

// openFDs counts the open file descriptors of process pid.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Skipf("cannot read the publisher's descriptors: %v", err)
	}
	return len(entries)
}

// uploadLeftovers lists the publisher's temporary files of unfinished
// uploads: the store's temp files and partial (resumable) uploads.
func uploadLeftovers(dir string) []string {
	var left []string
	for _, d := range []string{filepath.Join("blobs", "tmp"), "partial"} {
		entries, _ := os.ReadDir(filepath.Join(dir, "data", "publisher", d))
		for _, e := range entries {
			left = append(left, filepath.Join(d, e.Name()))
		}
	}
	return left
}

// TestThousandStalledUploads on the dev stack (issue 7, ATTACKS.md #34,
// decision 0103): one builder identity opens 1,000 uploads over four
// connections, each sending a header and a first chunk of 64 KiB, then
// nothing. The publisher admits its per-caller limit (16) and refuses the
// rest at once with ResourceExhausted naming --max-uploads-per-caller;
// another builder's `custody publish` succeeds meanwhile; the publisher's
// RSS and descriptors stay bounded; after the progress timeout every
// admitted upload is cut naming --upload-progress-timeout, its temp or
// partial file removed, and the descriptors return to the baseline.
func TestThousandStalledUploads(t *testing.T) {
	const (
		stalled   = 1000
		perCaller = 16 // the publisher's default --max-uploads-per-caller
		conns     = 4
		timeout   = 8 * time.Second
		chunk     = 64 << 10
	)
	s := start(t, "--upload-progress-timeout", timeout.String())
	pid := s.info.PIDs["publisher"]
	work := t.TempDir()
	// Warm up: a publish by the other builder and a call on each attacking
	// connection, so that the publisher's pools,
	// files and connections to the signer and catalog count in the baseline.
	s.mustCustody("publish", randomFile(t, work, "warm", 64<<10), "--name", "warm", "--version", "1", "--channel", "staging", "--as", "builder2")
	clients := make([]publisherv1.PublisherServiceClient, conns)
	for i := range clients {
		clients[i] = publisherv1.NewPublisherServiceClient(s.conn("builder", "publisher"))
		// Connect now, so the connection's socket is in the baseline.
		_, _ = clients[i].GetUploadStatus(t.Context(), &publisherv1.GetUploadStatusRequest{UploadId: strings.Repeat("w", 16)})
	}
	fds0, rss0 := openFDs(t, pid), vm(t, pid, "VmRSS")

	first := make([]byte, chunk)
	rand.Read(first)
	results := make(chan error, stalled)
	var wg sync.WaitGroup
	for i := range stalled {
		wg.Go(func() {
			stream, err := clients[i%conns].Upload(t.Context())
			if err != nil {
				results <- err
				return
			}
			h := &publisherv1.UploadHeader{Name: "stalled", Version: fmt.Sprint(i), Channel: "staging", Size: 1 << 20}
			if i%2 == 0 {
				h.UploadId = fmt.Sprintf("stalled-upload-%06d", i) // resumable: a partial file
			}
			if stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Header{Header: h}}) == nil {
				_ = stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Chunk{Chunk: first}})
			}
			// Never close the stream: wait for the publisher to end it.
			results <- stream.RecvMsg(new(publisherv1.UploadResponse))
		})
	}
	// All but perCaller are refused, naming the limit.
	var cut []error
	refused := 0
	deadline := time.After(2 * time.Minute)
	for refused < stalled-perCaller {
		select {
		case err := <-results:
			switch {
			case status.Code(err) == codes.ResourceExhausted && strings.Contains(err.Error(), "--max-uploads-per-caller"):
				refused++
			case status.Code(err) == codes.ResourceExhausted && strings.Contains(err.Error(), "--upload-progress-timeout"):
				// On a very loaded machine an admitted upload may already
				// have been cut, and a later one admitted in its slot.
				cut = append(cut, err)
			default:
				t.Fatalf("a stalled upload ended with %v, want ResourceExhausted naming --max-uploads-per-caller or --upload-progress-timeout", err)
			}
		case <-deadline:
			t.Fatalf("only %d of %d uploads over the limit refused after 2 minutes", refused, stalled-perCaller)
		}
	}
	// While the admitted ones stall, another builder publishes.
	src := randomFile(t, work, "meanwhile", 1<<20)
	out := s.mustCustody("publish", src, "--name", "meanwhile", "--version", "1", "--channel", "staging", "--as", "builder2")
	if digestOf(out) == "" {
		t.Errorf("publish by another builder during the attack printed no digest:\n%s", out)
	}
	fdsDuring, rssDuring := openFDs(t, pid), vm(t, pid, "VmRSS")
	t.Logf("during the attack (%d uploads cut so far): %d fds (baseline %d), RSS %d MiB (baseline %d MiB); %d files of unfinished uploads",
		len(cut), fdsDuring, fds0, rssDuring>>20, rss0>>20, len(uploadLeftovers(s.dir)))
	// One file per admitted upload (a temp or partial file) and a few for
	// the other builder's publish in flight; nothing per refused upload.
	if fdsDuring-fds0 > perCaller+8 {
		t.Errorf("%d more descriptors during the attack, want at most %d (one file per admitted upload, and slack)", fdsDuring-fds0, perCaller+8)
	}
	// Per admitted upload at most its stream's flow-control window (2 MiB,
	// fixed) and one chunk buffer; 64 MiB more for the runtime and the
	// refused streams' transient state.
	if limit := int64(perCaller*3<<20 + 64<<20); rssDuring-rss0 > limit {
		t.Errorf("RSS grew by %d MiB during the attack, want at most %d MiB", (rssDuring-rss0)>>20, limit>>20)
	}
	// The admitted ones are cut after the progress timeout, saying why.
	for len(cut) < perCaller {
		select {
		case err := <-results:
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--upload-progress-timeout") {
				t.Fatalf("a stalled upload: %v, want ResourceExhausted naming --upload-progress-timeout", err)
			}
			cut = append(cut, err)
		case <-time.After(10 * timeout):
			t.Fatalf("%d of %d admitted uploads cut after %s", len(cut), perCaller, 10*timeout)
		}
	}
	wg.Wait()
	// Everything is released: temp and partial files, descriptors.
	until := time.Now().Add(time.Minute)
	for {
		left, fds := uploadLeftovers(s.dir), openFDs(t, pid)
		if len(left) == 0 && fds <= fds0+2 {
			t.Logf("after the timeout: %d fds (baseline %d), RSS %d MiB", fds, fds0, vm(t, pid, "VmRSS")>>20)
			break
		}
		if time.Now().After(until) {
			t.Fatalf("a minute after the timeout: files left %v, %d descriptors (baseline %d)", left, fds, fds0)
		}
		time.Sleep(200 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(s.dir, "logs", "publisher.log"))
	if n := strings.Count(string(log), `"msg":"upload aborted"`); n < perCaller {
		t.Errorf("the publisher logged %d aborted uploads, want at least %d", n, perCaller)
	}
	// The attacker's slots came back.
	s.mustCustody("publish", randomFile(t, work, "after", 4<<10), "--name", "after", "--version", "1", "--channel", "staging", "--as", "builder")
}
