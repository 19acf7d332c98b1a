package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fetchJSON is the part of `custody fetch --json` these tests read.
type fetchJSON struct {
	OK       bool     `json:"ok"`
	Digest   string   `json:"digest"`
	Error    string   `json:"error"`
	Resumed  bool     `json:"resumed"`
	ServedBy []string `json:"served_by"`
	Attempts []struct {
		Edge   string `json:"edge"`
		Offset int64  `json:"offset"`
		Bytes  int64  `json:"bytes"`
		Answer string `json:"answer"`
	} `json:"attempts"`
}

func decodeFetch(t *testing.T, out string) fetchJSON {
	t.Helper()
	var r fetchJSON
	if i := strings.Index(out, "{"); i >= 0 {
		out = out[i:]
	}
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&r); err != nil {
		t.Fatalf("decode fetch --json: %v\n%s", err, out)
	}
	return r
}

// TestFetchFailover runs the dev stack's two real edge processes (dev and
// dev2): one is frozen (a stall), one is killed in the middle of a
// transfer of 200 MiB, and the same bytes are published under a second name; every
// fetch ends with the right bytes.
func TestFetchFailover(t *testing.T) {
	// The size issue 8 names for the killed-edge check: 200 MiB, large
	// enough that the kill lands in the middle of the transfer.
	const size = 200 << 20
	s := start(t)
	work := t.TempDir()
	dev, dev2 := s.info.Services["edge"]["https"], s.info.Services["edge2"]["https"]
	if dev == "" || dev2 == "" || dev == dev2 {
		t.Fatalf("want two edges on their own ports, stack.json has %q and %q", dev, dev2)
	}

	src := randomFile(t, work, "app.bin", size)
	s.mustCustody("publish", src, "--name", "app", "--version", "1", "--channel", "staging")
	// The same bytes under another name by another builder: a look-up by
	// digest alone would be ambiguous now.
	s.mustCustody("publish", src, "--name", "copy", "--version", "7", "--channel", "staging", "--as", "builder2")

	t.Run("both edges serve, each with its own cache", func(t *testing.T) {
		dst := filepath.Join(work, "first")
		r := decodeFetch(t, s.mustCustody("fetch", "app@1", "--env", "staging", "-o", dst, "--json"))
		if !r.OK || len(r.Attempts) != 1 || !strings.Contains(r.Attempts[0].Edge, dev) {
			t.Fatalf("first fetch: %+v", r)
		}
		sameFile(t, src, dst)
		dst2 := filepath.Join(work, "copy")
		s.mustCustody("fetch", "copy@7", "--env", "staging", "-o", dst2)
		sameFile(t, src, dst2)
	})

	t.Run("a frozen edge stalls and the other one serves", func(t *testing.T) {
		pid := s.info.PIDs["edge"]
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer syscall.Kill(pid, syscall.SIGCONT)
		dst := filepath.Join(work, "stalled")
		r := decodeFetch(t, s.mustCustody("fetch", "app@1", "--env", "staging", "-o", dst, "--json", "--stall-timeout", "2s"))
		sameFile(t, src, dst)
		if len(r.Attempts) != 2 || !strings.Contains(r.Attempts[0].Edge, dev) || !strings.Contains(r.Attempts[1].Edge, dev2) {
			t.Fatalf("attempts: %+v", r.Attempts)
		}
		if a := r.Attempts[0].Answer; !strings.Contains(a, "stalled") && !strings.Contains(a, "timeout") {
			t.Errorf("the frozen edge's answer does not say it stalled: %q", a)
		}
		// dev2 filled its own cache, apart from dev's.
		for _, svc := range []string{"edge", "edge2"} {
			if n := dirBytes(t, filepath.Join(s.dir, "data", svc)); n < size {
				t.Errorf("%s's cache holds %d bytes, want the %d-byte artifact", svc, n, size)
			}
		}
	})

	t.Run("an edge killed mid-transfer: the other resumes with a Range request", func(t *testing.T) {
		// Freeze the client once half of the bytes are in its temporary
		// file, kill the serving edge, and let the client go on. The
		// client is frozen by a signal sent from a polling loop, so it may
		// be caught a little later than half-way, or miss the window on a
		// busy machine: then try again.
		for try := 0; try < 5; try++ {
			dst := filepath.Join(work, "killed")
			os.Remove(dst)
			cmd := exec.Command(filepath.Join(s.bin, "custody"), "fetch", "app@1", "--env", "staging", "-o", dst, "--json", "--stall-timeout", "5s")
			cmd.Env = append(os.Environ(), "CUSTODY_DEV_DIR="+s.dir)
			var out strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			part := waitPart(work, "killed", size/2, size)
			_ = cmd.Process.Signal(syscall.SIGSTOP)
			edgePID := s.currentPID(t, "edge")
			if part > 0 {
				_ = syscall.Kill(edgePID, syscall.SIGKILL)
			}
			_ = cmd.Process.Signal(syscall.SIGCONT)
			err := cmd.Wait()
			if err != nil {
				t.Fatalf("fetch after a killed edge: %v\n%s", err, out.String())
			}
			sameFile(t, src, dst)
			r := decodeFetch(t, out.String())
			if part <= 0 || !r.Resumed || r.Attempts[0].Bytes < size/4 {
				t.Logf("try %d: the transfer was not caught in the middle (part %d bytes, resumed %v): again", try, part, r.Resumed)
				continue
			}
			last := r.Attempts[len(r.Attempts)-1]
			if !strings.Contains(last.Edge, dev2) || last.Offset <= 0 || last.Offset+last.Bytes != size {
				t.Fatalf("not resumed at dev2: %+v", r.Attempts)
			}
			t.Logf("killed edge dev after %d bytes; dev2 resumed at byte %d", r.Attempts[0].Bytes, last.Offset)
			return
		}
		t.Fatal("could not catch a transfer in the middle in 5 tries")
	})
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitPart waits until a temporary file of the fetch to dir/name holds at
// least from bytes but not all size (returns its size), or the fetch is
// over (0).
func waitPart(dir, name string, from, size int64) int64 {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return 0
		}
		parts, _ := filepath.Glob(filepath.Join(dir, "."+name+".part*"))
		for _, p := range parts {
			if fi, err := os.Stat(p); err == nil && fi.Size() >= from && fi.Size() < size {
				return fi.Size()
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
	return 0
}

// currentPID reads a service's pid from stack.json (the supervisor
// rewrites it after a restart).
func (s *stack) currentPID(t *testing.T, service string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "stack.json"))
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		PIDs map[string]int `json:"pids"`
	}
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	return info.PIDs[service]
}
