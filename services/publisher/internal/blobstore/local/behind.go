package local

import (
	"io"
	"os"
	"sync"
)

// Write-behind for large objects. The caller's goroutine (the upload's
// hashing and sealing) fills blocks; one goroutine per write moves them into
// the file, so that the page-cache copies of the write syscalls run beside
// the hashing and sealing instead of after them. The fsync that makes the
// object durable is unchanged: temp calls Sync before the object is linked
// into place. (Starting writeback early, sync_file_range every 16 MiB, was
// measured slower: decision 0112.)
const (
	behindBlock  = 512 << 10
	behindBlocks = 4 // blocks per write: its memory bound (2 MiB)
)

// writeBehind copies r into f, as io.Copy does, on two goroutines, and
// returns the bytes written. On an error of f the copy stops at the next
// block and that error is returned; an error of r is returned as it is.
// Nothing of the writer goroutine outlives the call.
func writeBehind(f *os.File, r io.Reader) (int64, error) {
	w := &behind{f: f, free: make(chan *[]byte, behindBlocks), full: make(chan *[]byte, behindBlocks), done: make(chan struct{})}
	// Blocks are allocated when first filled: a write that stalls after a
	// few bytes holds one.
	for range behindBlocks {
		w.free <- new([]byte)
	}
	go w.run()
	w.cur = w.take()
	_, rerr := io.Copy(w, r)
	if rerr == nil && len(*w.cur) > 0 {
		w.full <- w.cur
		w.cur = nil
	}
	if w.cur != nil {
		w.free <- w.cur
	}
	close(w.full)
	<-w.done
	if w.werr != nil {
		return w.n, w.werr
	}
	return w.n, rerr
}

type behind struct {
	f          *os.File
	free, full chan *[]byte
	done       chan struct{}
	cur        *[]byte // being filled by the caller
	mu         sync.Mutex
	werr       error // the file's first error; read after done, or under mu
	n          int64 // bytes written; read after done
}

// take returns an empty block, allocating it on its first use.
func (w *behind) take() *[]byte {
	b := <-w.free
	if *b == nil {
		*b = make([]byte, 0, behindBlock)
	}
	*b = (*b)[:0]
	return b
}

func (w *behind) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.werr
}

// Write fills blocks and hands each full one to the writer goroutine.
func (w *behind) Write(p []byte) (int, error) {
	if err := w.failed(); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		b := w.cur
		k := min(len(p), behindBlock-len(*b))
		*b = append(*b, p[:k]...)
		p, n = p[k:], n+k
		if len(*b) == behindBlock {
			w.full <- b
			w.cur = w.take()
			if err := w.failed(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (w *behind) run() {
	defer close(w.done)
	for b := range w.full {
		if w.failed() == nil {
			k, err := w.f.Write(*b)
			w.n += int64(k)
			if err != nil {
				w.mu.Lock()
				w.werr = err
				w.mu.Unlock()
			}
		}
		*b = (*b)[:0]
		w.free <- b
	}
}
