package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

// plaintextAt fails t if any file under dir holds a 64-byte window of
// data, and returns the bytes scanned.
func plaintextAt(t *testing.T, dir string, data []byte) int {
	t.Helper()
	hit, scanned := findPlaintext(dir, data)
	if hit != "" {
		t.Fatal(hit)
	}
	return scanned
}

func findPlaintext(dir string, data []byte) (hit string, scanned int) {
	const w = 64
	windows := make(map[uint64][]int, len(data))
	for i := 0; i+w <= len(data); i++ {
		k := binary.LittleEndian.Uint64(data[i:])
		windows[k] = append(windows[k], i)
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil // a temp file renamed away meanwhile
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		scanned += len(b)
		for j := 0; j+w <= len(b); j++ {
			for _, i := range windows[binary.LittleEndian.Uint64(b[j:])] {
				if bytes.Equal(b[j:j+w], data[i:i+w]) {
					hit = fmt.Sprintf("%s holds plaintext bytes %d-%d of the upload at offset %d", p, i, i+w, j)
					return fs.SkipAll
				}
			}
		}
		return nil
	})
	return hit, scanned
}

// TestNoPlaintextWindowDuringResumableUpload: while a resumable upload is
// streaming, once it is paused (the client went away), and after it is
// resumed and stored, no file under the store directory holds plaintext.
func TestNoPlaintextWindowDuringResumableUpload(t *testing.T) {
	f := start(t)
	c := f.client(t, "/builder/ci")
	data := make([]byte, 3<<20+12345)
	rand.Read(data)
	id := "plaintext-window-01"
	half := 2<<20 + 777

	ctx, cancel := context.WithCancel(t.Context())
	stream, err := c.Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sendHeader(t, stream, resumeHeader("1.0.0", id, 0, "", int64(len(data))))
	for i := 0; i < half; i += 64 << 10 {
		if err := sendChunk(stream, data[i:min(i+64<<10, half)]); err != nil {
			t.Fatal(err)
		}
	}
	waitHeld(t, c, id, int64(half))
	// Streaming: the partial's sealed chunks are on disk (all but the
	// bytes after the last whole chunk, which wait in memory).
	if n := plaintextAt(t, f.dir, data); n < half-sealed.DefaultChunk {
		t.Fatalf("scanned %d bytes while streaming, less than the %d held in whole chunks: the walk missed the partial", n, half-sealed.DefaultChunk)
	}
	cancel()
	// Paused: Suspend has sealed the tail too.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		partials, _ := os.ReadDir(filepath.Join(f.dir, "partial"))
		if len(partials) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d partial files, want 3 (chunks, key, tail)", len(partials))
		}
	}
	waitHeld(t, c, id, int64(half))
	plaintextAt(t, f.dir, data)

	// Resumed from the middle of a record, then stored.
	from := int64(half - 1000)
	resp, err := upload(t.Context(), c, resumeHeader("1.0.0", id, from, digestOf(data), int64(len(data))), bytes.NewReader(data[from:]), 64<<10)
	if err != nil || resp.GetDigest() != digestOf(data) {
		t.Fatalf("resumed upload: %v %v", resp, err)
	}
	plaintextAt(t, f.dir, data)
	got, err := download(t, f.client(t, "/edge/dev"), resp.GetDigest())
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download: %v", err)
	}
	// The scan can fail: a plaintext copy under the store is found.
	if err := os.WriteFile(filepath.Join(f.dir, "partial", "control"), data[5000:5200], 0o600); err != nil {
		t.Fatal(err)
	}
	if hit, _ := findPlaintext(f.dir, data); hit == "" {
		t.Fatal("control: the scan missed a plaintext copy")
	}
}
