package local

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// onlyReader hides WriterTo, so writeBehind sees a plain stream.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestWriteBehindWritesEveryByte(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{0, 1, behindBlock - 1, behindBlock, behindBlock + 1, behindBlocks*behindBlock + 7, 16<<20 + behindBlock/2} {
		data := make([]byte, size)
		rand.Read(data)
		f, err := os.Create(filepath.Join(dir, "f"))
		if err != nil {
			t.Fatal(err)
		}
		n, err := writeBehind(f, onlyReader{bytes.NewReader(data)})
		f.Close()
		got, _ := os.ReadFile(f.Name())
		if err != nil || n != int64(size) || !bytes.Equal(got, data) {
			t.Fatalf("size %d: wrote %d (%v), file has %d bytes equal=%v", size, n, err, len(got), bytes.Equal(got, data))
		}
	}
}

type failAfter struct {
	left int
	err  error
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.left == 0 {
		return 0, f.err
	}
	n := min(len(p), f.left)
	clear(p[:n])
	f.left -= n
	return n, nil
}

func TestWriteBehindErrors(t *testing.T) {
	dir := t.TempDir()
	// The source's error comes back as it is.
	f, err := os.Create(filepath.Join(dir, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	broke := errors.New("upload broke off")
	if _, err := writeBehind(f, &failAfter{left: 2*behindBlock + 5, err: broke}); !errors.Is(err, broke) {
		t.Fatalf("failing source: %v, want its error", err)
	}
	// The file's error (here: not open for writing) stops the copy and is
	// returned, also when the source has much more to give.
	ro, err := os.Open(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	src := &failAfter{left: 64 * behindBlock, err: io.EOF}
	if _, err := writeBehind(ro, src); err == nil {
		t.Fatal("writing into a read-only file succeeded")
	}
	if src.left < 32*behindBlock {
		t.Fatalf("the copy went on reading %d MiB after the file failed", (64*behindBlock-src.left)>>20)
	}
}
