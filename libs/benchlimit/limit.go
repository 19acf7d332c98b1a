// Package benchlimit measures the machine limits that Custody's transfer
// benchmarks (publisher, edge) report their rates against, in the same run:
// `dd conv=fsync` to the filesystem they write to, and one core's rate of
// one SHA-256 pass plus two AES-256-GCM passes over the same bytes.
package benchlimit

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"
)

var ddRate = regexp.MustCompile(`(\d+) bytes .* copied, ([0-9.]+) s`)

// DDFsync is `dd conv=fsync` of 1 GiB into dir, in MB/s.
func DDFsync(dir string) (float64, error) {
	path := filepath.Join(dir, "dd.bin")
	out, err := exec.Command("dd", "if=/dev/zero", "of="+path, "bs=1M", "count=1024", "conv=fsync").CombinedOutput()
	os.Remove(path)
	if err != nil {
		return 0, fmt.Errorf("dd: %v\n%s", err, out)
	}
	m := ddRate.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("dd output: %s", out)
	}
	n, _ := strconv.ParseFloat(string(m[1]), 64)
	secs, _ := strconv.ParseFloat(string(m[2]), 64)
	return n / secs / 1e6, nil
}

// CryptoRate is one core's rate of SHA-256 plus two AES-256-GCM passes over
// the same bytes, in MB/s, taken chunk bytes at a time from block (at least
// chunk long) over 256 MiB.
func CryptoRate(block []byte, chunk int) float64 {
	key := make([]byte, 32)
	rand.Read(key)
	c, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(c)
	nonce := make([]byte, gcm.NonceSize())
	dst := make([]byte, 0, chunk+gcm.Overhead())
	h := sha256.New()
	const total = 256 << 20
	start := time.Now()
	for done := 0; done < total; done += chunk {
		p := block[done%len(block):][:chunk]
		h.Write(p)
		gcm.Seal(dst[:0], nonce, p, nil)
		gcm.Seal(dst[:0], nonce, p, nil)
	}
	return total / time.Since(start).Seconds() / 1e6
}

// Median is the middle value of xs (the upper one of an even count).
func Median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
