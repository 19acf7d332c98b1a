package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// plaintextUnder reports the first file under dir that holds any 64-byte
// window of one of datas (hit is empty if none does) and the bytes it
// scanned. Every 64-byte window contains one of its data's 32-byte blocks at
// an offset divisible by 32, so only those are indexed (by their first 8
// bytes) and each file offset is looked up once: a few hundred MB of dev
// directory scan in seconds with an index of a 32nd of the data's size.
func plaintextUnder(dir string, datas ...[]byte) (hit string, scanned int64, err error) {
	const block = 32
	type at struct{ data, off int }
	index := make(map[uint64][]at)
	for n, data := range datas {
		for i := 0; i+block <= len(data); i += block {
			k := binary.LittleEndian.Uint64(data[i:])
			index[k] = append(index[k], at{n, i})
		}
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // a temp file renamed away meanwhile
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		scanned += int64(len(b))
		for j := 0; j+block <= len(b); j++ {
			for _, a := range index[binary.LittleEndian.Uint64(b[j:])] {
				if bytes.Equal(b[j:j+block], datas[a.data][a.off:a.off+block]) {
					hit = fmt.Sprintf("%s holds plaintext bytes %d-%d of artifact %d at offset %d", p, a.off, a.off+block, a.data, j)
					return fs.SkipAll
				}
			}
		}
		return nil
	})
	return hit, scanned, err
}
