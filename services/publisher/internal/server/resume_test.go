package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
)

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// interrupted sends the header and data[:n] of a resumable upload, then
// drops the stream, and waits until the publisher holds n bytes.
func interrupted(t *testing.T, c publisherv1.PublisherServiceClient, h *publisherv1.UploadHeader, data []byte, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := c.Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sendHeader(t, stream, h)
	for i := 0; i < n; i += 64 << 10 {
		if err := sendChunk(stream, data[i:min(i+64<<10, n)]); err != nil {
			t.Fatal(err)
		}
	}
	waitHeld(t, c, h.GetUploadId(), int64(n))
	cancel()
}

func waitHeld(t *testing.T, c publisherv1.PublisherServiceClient, id string, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := c.GetUploadStatus(t.Context(), &publisherv1.GetUploadStatusRequest{UploadId: id})
		if err == nil && st.GetOffset() == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("publisher does not hold %d bytes of %s: %v %v", n, id, st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func resumeHeader(version, id string, offset int64, digest string, size int64) *publisherv1.UploadHeader {
	h := header(version, size)
	h.UploadId, h.Offset, h.Digest = id, offset, digest
	return h
}

func TestResumedUploadEqualsUninterrupted(t *testing.T) {
	f := start(t)
	c := f.client(t, "/builder/ci")
	data := make([]byte, 3<<20+12345)
	rand.Read(data)
	whole, err := upload(t.Context(), c, header("whole", 0), bytes.NewReader(data), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i, cut := range []int{0, 1, 64 << 10, 1 << 20, len(data) - 1, len(data)} {
		id := fmt.Sprintf("resume-test-%08d", i)
		version := fmt.Sprintf("resumed-%d", i)
		interrupted(t, c, resumeHeader(version, id, 0, "", int64(len(data))), data, cut)
		st, err := c.GetUploadStatus(t.Context(), &publisherv1.GetUploadStatusRequest{UploadId: id})
		if err != nil {
			t.Fatal(err)
		}
		off := st.GetOffset()
		resp, err := upload(t.Context(), c, resumeHeader(version, id, off, digestOf(data), int64(len(data))), bytes.NewReader(data[off:]), 1<<20)
		if err != nil {
			t.Fatalf("cut at %d: resume from %d: %v", cut, off, err)
		}
		if resp.GetDigest() != whole.GetDigest() || resp.GetSize() != int64(len(data)) {
			t.Fatalf("cut at %d: resumed upload is %s (%d bytes), the whole one %s", cut, resp.GetDigest(), resp.GetSize(), whole.GetDigest())
		}
		if got, err := download(t, f.client(t, "/edge/dev"), resp.GetDigest()); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("cut at %d: download: %v", cut, err)
		}
		if _, err := c.GetUploadStatus(t.Context(), &publisherv1.GetUploadStatusRequest{UploadId: id}); status.Code(err) != codes.NotFound {
			t.Errorf("cut at %d: a finished upload is still resumable: %v", cut, err)
		}
	}
	if left := leftovers(t, f.dir); len(left) > 0 {
		t.Errorf("finished uploads left %v", left)
	}
}

// A resume can only complete with the bytes an uninterrupted upload would
// have stored: any other combination is refused and stores nothing.
func TestResumeCannotChangeTheBytes(t *testing.T) {
	f := start(t)
	c := f.client(t, "/builder/ci")
	data := make([]byte, 2<<20)
	rand.Read(data)
	// other differs in the part held and in the rest: as if the file
	// changed between the interrupted attempt and the resume.
	other := bytes.Clone(data)
	other[0] ^= 1
	other[len(other)-1] ^= 1
	const cut = 1 << 20
	tests := map[string]struct {
		offset int64
		digest string
		rest   []byte
		want   codes.Code
		also   string
	}{
		"other suffix, true digest":   {cut, digestOf(data), other[cut:], codes.InvalidArgument, "nothing was stored"},
		"other suffix, its digest":    {cut, digestOf(other), other[cut:], codes.InvalidArgument, "nothing was stored"},
		"suffix from the wrong place": {cut, digestOf(data), data[cut+1:], codes.InvalidArgument, ""},
		"offset beyond what is held":  {cut + 1, digestOf(data), data[cut+1:], codes.InvalidArgument, "holds 1048576 bytes"},
		"no digest":                   {cut, "", data[cut:], codes.InvalidArgument, "digest"},
		"no such upload":              {cut, digestOf(data), data[cut:], codes.NotFound, "offset 0"},
	}
	for name, tt := range tests {
		id := "wrong-resume-" + strings.ReplaceAll(strings.ReplaceAll(name, " ", "-"), ",", "")
		if name != "no such upload" {
			interrupted(t, c, resumeHeader("v-"+id[13:20], id, 0, "", 0), data, cut)
		}
		_, err := upload(t.Context(), c, resumeHeader("v-"+id[13:20], id, tt.offset, tt.digest, 0), bytes.NewReader(tt.rest), 1<<20)
		if status.Code(err) != tt.want || !strings.Contains(err.Error(), tt.also) {
			t.Errorf("%s: %v, want %s mentioning %q", name, err, tt.want, tt.also)
		}
		if _, err := download(t, f.client(t, "/admin/ops"), digestOf(other)); status.Code(err) != codes.NotFound {
			t.Fatalf("%s: the other bytes were stored: %v", name, err)
		}
	}
	// A resume from an earlier offset than held (the client lost track)
	// truncates and still yields the right bytes.
	id := "earlier-offset-resume"
	interrupted(t, c, resumeHeader("earlier", id, 0, "", 0), data, cut)
	resp, err := upload(t.Context(), c, resumeHeader("earlier", id, 1000, digestOf(data), 0), bytes.NewReader(data[1000:]), 1<<20)
	if err != nil || resp.GetDigest() != digestOf(data) {
		t.Fatalf("resume from an earlier offset: %v %v", resp, err)
	}
}

func TestResumeIsPerCaller(t *testing.T) {
	f := start(t)
	data := make([]byte, 1<<20)
	rand.Read(data)
	id := "shared-looking-id-1"
	interrupted(t, f.client(t, "/builder/ci"), resumeHeader("mine", id, 0, "", 0), data, 1000)
	thief := f.client(t, "/builder/other")
	if _, err := thief.GetUploadStatus(t.Context(), &publisherv1.GetUploadStatusRequest{UploadId: id}); status.Code(err) != codes.NotFound {
		t.Errorf("another builder sees the upload: %v", err)
	}
	_, err := upload(t.Context(), thief, resumeHeader("mine", id, 1000, digestOf(data), 0), bytes.NewReader(data[1000:]), 1<<20)
	if status.Code(err) != codes.NotFound {
		t.Errorf("another builder resumes the upload: %v, want NotFound", err)
	}
	waitHeld(t, f.client(t, "/builder/ci"), id, 1000)
	for _, bad := range []string{"", "short", strings.Repeat("x", 65), "has/slash-in-the-id", "../../etc/passwd-xx"} {
		if _, err := thief.GetUploadStatus(t.Context(), &publisherv1.GetUploadStatusRequest{UploadId: bad}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("upload id %q: %v, want InvalidArgument", bad, err)
		}
	}
}

// A resume that arrives while the publisher still serves the old stream
// (its connection died silently) takes over: the old one is aborted.
func TestResumeTakesOverALiveStream(t *testing.T) {
	f := start(t)
	c := f.client(t, "/builder/ci")
	data := make([]byte, 1<<20)
	rand.Read(data)
	id := "takeover-upload-01"
	old, err := c.Upload(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	sendHeader(t, old, resumeHeader("takeover", id, 0, "", 0))
	if err := sendChunk(old, data[:4096]); err != nil {
		t.Fatal(err)
	}
	waitHeld(t, c, id, 4096)
	resp, err := upload(t.Context(), c, resumeHeader("takeover", id, 4096, digestOf(data), 0), bytes.NewReader(data[4096:]), 1<<20)
	if err != nil || resp.GetDigest() != digestOf(data) {
		t.Fatalf("resume over a live stream: %v %v", resp, err)
	}
	if err := old.RecvMsg(new(publisherv1.UploadResponse)); status.Code(err) != codes.Aborted {
		t.Errorf("the old stream: %v, want Aborted", err)
	}
}
