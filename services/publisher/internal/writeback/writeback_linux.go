// Package writeback starts the kernel writing a file's dirty pages back
// while the file is still being written, so that the fsync that makes it
// durable has little left to do. It never replaces that fsync.
package writeback

import (
	"os"

	"golang.org/x/sys/unix"
)

// Every is how much a writer writes between two calls to Start.
const Every = 16 << 20

// Start asks the kernel to start writing back n bytes of f from off,
// without waiting for them (sync_file_range SYNC_FILE_RANGE_WRITE). Its
// error is ignored: it is only a hint, and the final fsync reports what did
// not reach the disk.
func Start(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
