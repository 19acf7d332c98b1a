// Package directio writes a file sequentially with O_DIRECT, in aligned
// blocks, on a goroutine of its own (decision 0127).
//
// A publish through the page cache costs the kernel's copy of every byte
// into the cache and leaves the whole blob to be written back by the final
// fsync, with the cores idle meanwhile. Written directly, the bytes go from
// the block to the device while the caller hashes and seals the next block,
// and the final fsync has a few KiB left.
//
// Blocks come from one process-wide budget. A writer that finds the budget
// spent (many uploads at once, or uploads stalled part way through a block)
// writes through the page cache as before: never more memory, only slower.
// A file system without O_DIRECT (tmpfs before Linux 6.6, for one) is the
// same.
package directio

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// Align is the offset, length and memory alignment of a direct write;
	// 4 KiB satisfies every device's logical block size up to 4 KiB.
	Align = 4096
	// BlockSize is the size of one direct write.
	BlockSize = 2 << 20
	// Blocks is the process-wide budget: two blocks (one filling, one
	// being written) for each of Blocks/2 writers at once.
	Blocks = 16
)

// budget is the process's blocks: allocated on first use, reused last in
// first out (the blocks in use stay few and warm), never more than Blocks.
var budget struct {
	sync.Mutex
	free      [][]byte
	allocated int
}

// take returns a block of the budget, or false if it is spent.
func take() ([]byte, bool) {
	budget.Lock()
	defer budget.Unlock()
	return takeLocked()
}

// takeTwo returns two blocks, or false (and none) if fewer are left.
func takeTwo() (a, b []byte, ok bool) {
	budget.Lock()
	defer budget.Unlock()
	if len(budget.free)+Blocks-budget.allocated < 2 {
		return nil, nil, false
	}
	a, _ = takeLocked()
	b, _ = takeLocked()
	return a, b, true
}

// takeLocked is take with the budget's lock held.
func takeLocked() ([]byte, bool) {
	if n := len(budget.free); n > 0 {
		b := budget.free[n-1]
		budget.free = budget.free[:n-1]
		return b, true
	}
	if budget.allocated == Blocks {
		return nil, false
	}
	budget.allocated++
	return aligned(BlockSize), true
}

func give(b []byte) {
	budget.Lock()
	defer budget.Unlock()
	budget.free = append(budget.free, b)
}

// inUse is the number of blocks taken and not given back.
func inUse() int {
	budget.Lock()
	defer budget.Unlock()
	return budget.allocated - len(budget.free)
}

// aligned returns n bytes starting at an address that is a multiple of
// Align.
func aligned(n int) []byte {
	b := make([]byte, n+Align)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (Align - 1))
	if off != 0 {
		off = Align - off
	}
	return b[off : off+n : off+n]
}

// Writer writes f from offset off on. It is not safe for concurrent use;
// nothing else may write f until Close returns.
type Writer struct {
	f   *os.File
	off int64 // file offset of the first byte not yet handed to a write

	started  bool
	buffered bool      // no blocks or no O_DIRECT: Write goes to the page cache
	fail     bool      // direct writes refused; touched only by whoever writes
	blocks   [2][]byte // blocks[i] is being filled, blocks[1-i] may be being written
	i, n     int       // n bytes are in blocks[i]
	busy     bool      // blocks[1-i] is being written

	direct  bool // O_DIRECT is set on f; touched only by whoever writes
	jobs    chan job
	results chan error
	err     error
}

type job struct {
	b   []byte
	off int64
}

// NewWriter returns a writer of f from offset off. f must be open for
// writing, without O_APPEND.
func NewWriter(f *os.File, off int64) *Writer {
	return &Writer{f: f, off: off}
}

// Write copies p into blocks and hands each full block to the writing
// goroutine; it returns once p is copied, or with the error of an earlier
// block.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if !w.started {
		w.start()
	}
	if w.buffered {
		k, err := w.f.WriteAt(p, w.off)
		w.off += int64(k)
		if err != nil {
			w.err = err
		}
		return k, err
	}
	n := 0
	for len(p) > 0 {
		// The first block ends at an aligned offset, so that every later
		// one starts at one.
		limit := BlockSize
		if head := int(w.off % Align); head != 0 {
			limit = Align - head
		}
		k := copy(w.blocks[w.i][w.n:limit], p)
		w.n += k
		n += k
		p = p[k:]
		if w.n == limit {
			if err := w.submit(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// start takes two blocks from the budget, sets O_DIRECT and starts the
// goroutine; without either, the writer goes through the page cache.
func (w *Writer) start() {
	w.started = true
	a, b, ok := takeTwo()
	if !ok {
		w.buffered = true
		return
	}
	if err := setDirect(w.f, true); err != nil {
		give(a)
		give(b)
		w.buffered = true
		return
	}
	w.direct = true
	w.blocks = [2][]byte{a, b}
	jobs, results := make(chan job), make(chan error)
	w.jobs, w.results = jobs, results
	go func() {
		for j := range jobs {
			results <- w.write(j.b, j.off)
		}
	}()
}

// submit hands the block being filled to the goroutine, once the one
// before it is written.
func (w *Writer) submit() error {
	if err := w.wait(); err != nil {
		return err
	}
	w.jobs <- job{w.blocks[w.i][:w.n], w.off}
	w.busy = true
	w.off += int64(w.n)
	w.i, w.n = 1-w.i, 0
	return nil
}

// wait waits for the block being written.
func (w *Writer) wait() error {
	if w.busy {
		w.busy = false
		if err := <-w.results; err != nil && w.err == nil {
			w.err = err
		}
	}
	return w.err
}

// write writes b at off: directly if both are aligned, through the page
// cache otherwise (the head before the first aligned offset, the tail).
func (w *Writer) write(b []byte, off int64) error {
	if !w.fail && off%Align == 0 && len(b)%Align == 0 {
		if !w.direct {
			if err := setDirect(w.f, true); err != nil {
				return err
			}
			w.direct = true
		}
		_, err := w.f.WriteAt(b, off)
		if !errors.Is(err, syscall.EINVAL) {
			return err
		}
		// Refused (an alignment this device does not take): through the
		// page cache, now and from now on.
		w.fail = true
	}
	if w.direct {
		if err := setDirect(w.f, false); err != nil {
			return err
		}
		w.direct = false
	}
	_, err := w.f.WriteAt(b, off)
	return err
}

// Close writes what is left, waits for it, clears O_DIRECT and gives the
// blocks back; it neither closes nor fsyncs f. It returns the first error
// of any write.
func (w *Writer) Close() error {
	if w.jobs == nil {
		return w.err
	}
	err := w.wait()
	close(w.jobs)
	w.jobs = nil
	if err == nil && w.n > 0 {
		b := w.blocks[w.i][:w.n]
		if k := len(b) / Align * Align; k > 0 && w.off%Align == 0 {
			err = w.write(b[:k], w.off)
			w.off += int64(k)
			b = b[k:]
		}
		if err == nil && len(b) > 0 {
			err = w.write(b, w.off)
			w.off += int64(len(b))
		}
		w.n = 0
	}
	if w.direct {
		if cerr := setDirect(w.f, false); err == nil {
			err = cerr
		}
		w.direct = false
	}
	give(w.blocks[0])
	give(w.blocks[1])
	w.blocks = [2][]byte{}
	if err != nil && w.err == nil {
		w.err = err
	}
	if w.err != nil {
		return fmt.Errorf("write %s: %w", w.f.Name(), w.err)
	}
	return nil
}

// setDirect sets or clears O_DIRECT on f's open file description.
func setDirect(f *os.File, on bool) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil {
			serr = err
			return
		}
		if on {
			flags |= unix.O_DIRECT
		} else {
			flags &^= unix.O_DIRECT
		}
		_, serr = unix.FcntlInt(fd, unix.F_SETFL, flags)
	}); err != nil {
		return err
	}
	return serr
}
