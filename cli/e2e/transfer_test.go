package e2e

import (
	"bufio"
	"crypto/sha256"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// vm reads a VmRSS or VmHWM line (kB) of /proc/<pid>/status, in bytes.
func vm(t *testing.T, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func fileDigest(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// cutter forwards TCP to target and cuts the first connection after limit
// bytes from the client: a network drop in the middle of an upload.
type cutter struct {
	l      net.Listener
	target string
	limit  int64
	cuts   atomic.Int32
	first  sync.Once
}

func newCutter(t *testing.T, target string, limit int64) *cutter {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{l: l, target: target, limit: limit}
	t.Cleanup(func() { l.Close() })
	go c.serve()
	return c
}

func (c *cutter) serve() {
	for {
		in, err := c.l.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", c.target)
		if err != nil {
			in.Close()
			continue
		}
		limit := int64(-1)
		c.first.Do(func() { limit = c.limit })
		go func() {
			defer in.Close()
			defer out.Close()
			if limit < 0 {
				io.Copy(out, in)
				return
			}
			io.CopyN(out, in, limit)
			c.cuts.Add(1)
		}()
		go func() { io.Copy(in, out); in.Close() }()
	}
}

func TestLargeTransfers(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 1 GiB through the publisher")
	}
	s := start(t)
	work := t.TempDir()

	t.Run("publish resumes after a dropped connection", func(t *testing.T) {
		src := randomFile(t, work, "resumed.bin", 48<<20)
		proxy := newCutter(t, s.info.Services["publisher"]["grpc"], 12<<20)
		out := s.mustCustody("publish", src, "--name", "resumed", "--version", "1", "--channel", "staging",
			"--publisher-addr", proxy.l.Addr().String())
		if proxy.cuts.Load() != 1 || !strings.Contains(out, "upload interrupted") || !strings.Contains(out, "resuming at byte") {
			t.Fatalf("the upload was not cut and resumed (%d cuts):\n%s", proxy.cuts.Load(), out)
		}
		if strings.Contains(out, "resuming at byte 0 ") {
			t.Errorf("resumed from 0: the publisher kept nothing:\n%s", out)
		}
		log, _ := os.ReadFile(filepath.Join(s.dir, "logs", "publisher.log"))
		if !containsResumed(string(log)) {
			t.Errorf("the publisher did not log a resumed upload")
		}
		dst := filepath.Join(work, "resumed.out")
		s.mustCustody("fetch", "resumed@1", "--env", "staging", "-o", dst)
		if fileDigest(t, src) != fileDigest(t, dst) {
			t.Fatal("the resumed artifact differs from the file")
		}
		if left, _ := os.ReadDir(filepath.Join(s.dir, "data", "publisher", "partial")); len(left) != 0 {
			t.Errorf("partial uploads left after success: %d", len(left))
		}
	})

	t.Run("1 GiB through the publisher in under 100 MB of memory", func(t *testing.T) {
		pid := s.info.PIDs["publisher"]
		src := randomFile(t, work, "big.bin", 1<<30)
		var peak atomic.Int64
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond):
					peak.Store(max(peak.Load(), vm(t, pid, "VmRSS")))
				}
			}
		})
		start := time.Now()
		s.mustCustody("publish", src, "--name", "big", "--version", "1", "--channel", "staging")
		published := time.Since(start)
		dst := filepath.Join(work, "big.out")
		s.mustCustody("fetch", "big@1", "--env", "staging", "-o", dst)
		close(done)
		wg.Wait()
		hwm := vm(t, pid, "VmHWM")
		t.Logf("publisher: peak VmRSS %d MiB sampled, VmHWM %d MiB (1 GiB published in %s, then fetched through the edge)",
			peak.Load()>>20, hwm>>20, published.Round(time.Millisecond))
		if hwm >= 100<<20 {
			t.Errorf("publisher VmHWM %d MiB, want under 100 MB", hwm>>20)
		}
		if fileDigest(t, src) != fileDigest(t, dst) {
			t.Fatal("fetched bytes differ")
		}
	})
}

func containsResumed(log string) bool {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `"name":"resumed"`) && strings.Contains(line, `"resumed_at":`) && !strings.Contains(line, `"resumed_at":0`) {
			return true
		}
	}
	return false
}
