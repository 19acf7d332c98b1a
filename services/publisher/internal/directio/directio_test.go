package directio

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// writeFile writes data to a new file from offset off (after off bytes of
// prefix) in pieces of the given sizes, cycling, and returns the file's
// content.
func writeFile(t *testing.T, prefix, data []byte, pieces []int) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, prefix, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := NewWriter(f, int64(len(prefix)))
	for i, rest := 0, data; len(rest) > 0; i++ {
		k := min(pieces[i%len(pieces)], len(rest))
		if n, err := w.Write(rest[:k]); err != nil || n != k {
			t.Fatalf("write %d bytes: %d, %v", k, n, err)
		}
		rest = rest[k:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil || flags&unix.O_DIRECT != 0 {
		t.Fatalf("O_DIRECT still set after Close (flags %#x, %v)", flags, err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// Every byte lands where it belongs, whatever the start offset, the sizes
// of the writes and the end: aligned or not, less than a block, several
// blocks, a block boundary exactly.
func TestWritesLandInPlace(t *testing.T) {
	sealedChunk := 256<<10 + 16
	for _, tc := range []struct {
		name   string
		prefix int
		size   int
		pieces []int
	}{
		{"empty", 0, 0, []int{1}},
		{"one byte", 0, 1, []int{1}},
		{"less than a block", 0, BlockSize/3 + 5, []int{4096, 7}},
		{"exactly one block", 0, BlockSize, []int{BlockSize}},
		{"blocks and a tail, sealed chunks", 0, 9*sealedChunk + 100, []int{sealedChunk}},
		{"aligned end", 0, 5 * BlockSize, []int{1 << 20}},
		{"unaligned start", sealedChunk * 3, 7*sealedChunk + 1, []int{sealedChunk}},
		{"start one below an aligned offset", Align - 1, 3*BlockSize + 2, []int{1, 100, 65536}},
		{"aligned non-zero start", 2 * Align, 2*BlockSize + Align, []int{3 * Align}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix, data := random(tc.prefix), random(tc.size)
			got := writeFile(t, prefix, data, tc.pieces)
			if !bytes.Equal(got, append(prefix, data...)) {
				t.Fatalf("file holds %d bytes, not the %d written after the %d-byte prefix", len(got), tc.size, tc.prefix)
			}
		})
	}
}

// With the budget spent, writers go through the page cache and still
// write every byte; blocks come back to the budget on Close.
func TestSpentBudgetFallsBackToThePageCache(t *testing.T) {
	var held [][]byte
	for {
		b, ok := take()
		if !ok {
			break
		}
		held = append(held, b)
	}
	if len(held) != Blocks {
		t.Fatalf("took %d blocks, budget %d", len(held), Blocks)
	}
	data := random(3*BlockSize + 77)
	if got := writeFile(t, nil, data, []int{256<<10 + 16}); !bytes.Equal(got, data) {
		t.Fatal("page-cache writer lost bytes")
	}
	// One block left: a writer needs two, so it too uses the page cache
	// and gives the one back.
	give(held[0])
	held = held[1:]
	if got := writeFile(t, nil, data, []int{1 << 20}); !bytes.Equal(got, data) {
		t.Fatal("page-cache writer lost bytes")
	}
	if n := inUse(); n != Blocks-1 {
		t.Fatalf("%d blocks in use after the writer closed, want %d", n, Blocks-1)
	}
	for _, b := range held {
		give(b)
	}
	if n := inUse(); n != 0 {
		t.Fatalf("%d blocks in use, want 0", n)
	}
}

// Writers one after another reuse the same two blocks: the budget's
// memory is what was in use at once, not all of it.
func TestSequentialWritersReuseBlocks(t *testing.T) {
	allocated := func() int {
		budget.Lock()
		defer budget.Unlock()
		return budget.allocated
	}
	before := allocated()
	data := random(BlockSize + 100)
	for range 3 * Blocks {
		if got := writeFile(t, nil, data, []int{1 << 20}); !bytes.Equal(got, data) {
			t.Fatal("writer lost bytes")
		}
	}
	if n := allocated(); n > max(before, 2) {
		t.Fatalf("%d blocks allocated after writers one at a time (%d before), want at most %d", n, before, max(before, 2))
	}
}

// Writers at once share the budget and each writes its own file right.
func TestConcurrentWriters(t *testing.T) {
	done := make(chan error)
	for i := range Blocks {
		go func() {
			data := random(2*BlockSize + i*1000)
			path := filepath.Join(t.TempDir(), "f")
			f, err := os.Create(path)
			if err != nil {
				done <- err
				return
			}
			defer f.Close()
			w := NewWriter(f, 0)
			for rest := data; len(rest) > 0; {
				k := min(len(rest), 300000)
				if _, err := w.Write(rest[:k]); err != nil {
					done <- err
					return
				}
				rest = rest[k:]
			}
			if err := w.Close(); err != nil {
				done <- err
				return
			}
			got, err := os.ReadFile(path)
			if err == nil && !bytes.Equal(got, data) {
				err = os.ErrInvalid
			}
			done <- err
		}()
	}
	for range Blocks {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n := inUse(); n != 0 {
		t.Fatalf("%d blocks in use after every writer closed, want 0", n)
	}
}

// A write error reaches the caller: on a later Write or on Close.
func TestWriteErrorIsReturned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := os.Open(path) // read-only: every write fails
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	w := NewWriter(ro, 0)
	var werr error
	for range 4 {
		if _, werr = w.Write(make([]byte, BlockSize)); werr != nil {
			break
		}
	}
	cerr := w.Close()
	if werr == nil && cerr == nil {
		t.Fatal("writes to a read-only file reported no error")
	}
	if n := inUse(); n != 0 {
		t.Fatalf("%d blocks in use after a failed writer, want 0", n)
	}
}
