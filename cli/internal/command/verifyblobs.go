package command

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"

	"github.com/custody-dev/custody/cli/internal/backup"
)

// findService finds a service binary next to custody, then on PATH.
func findService(name, why string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), name); isFile(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("the %s binary %s and is not next to custody or on PATH: pass --%s-bin", name, why, name)
}

// runDumpRows runs catalog dump-rows on db and hands each row to fn.
func runDumpRows(bin, db string, fn func(backup.Row) error) error {
	cmd := exec.Command(bin, "dump-rows", "--db", db)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(&limitReader{r: out, n: maxVerifyOutput})
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var ferr error
	for sc.Scan() && ferr == nil {
		var r backup.Row
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			ferr = fmt.Errorf("catalog dump-rows: %v", err)
			break
		}
		ferr = fn(r)
	}
	if ferr == nil {
		ferr = sc.Err()
	}
	if ferr != nil {
		_ = cmd.Process.Kill()
	}
	werr := cmd.Wait()
	if ferr != nil {
		return ferr
	}
	if werr != nil {
		return fmt.Errorf("catalog dump-rows: %v: %s", werr, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// maxVerifyOutput bounds what custody reads of publisher verify-blobs.
const maxVerifyOutput = 256 << 20

// runVerifyBlobs runs publisher verify-blobs and turns its JSON lines into
// problems naming each blob's key record in the set.
func runVerifyBlobs(bin string, args []string) (int, []backup.Problem, error) {
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	ok, unavailable := 0, 0
	var problems []backup.Problem
	sc := bufio.NewScanner(&limitReader{r: out, n: maxVerifyOutput})
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r struct {
			Record, Digest, Problem string
			OK, Unavailable         bool
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		switch {
		case r.OK:
			ok++
		case r.Unavailable:
			unavailable++
		default:
			problems = append(problems, backup.Problem{Path: path.Join("data/publisher/blobs/objects", r.Record), Kind: backup.KindBlob,
				Problem: fmt.Sprintf("blob %s does not decrypt with the KEK to bytes of its digest: %s", r.Digest, r.Problem)})
		}
	}
	werr := cmd.Wait()
	if unavailable > 0 {
		return ok, problems, fmt.Errorf("the KEK was unavailable for %d blobs: %s", unavailable, bytes.TrimSpace(stderr.Bytes()))
	}
	if werr != nil && len(problems) == 0 {
		return ok, nil, fmt.Errorf("publisher verify-blobs: %v: %s", werr, bytes.TrimSpace(stderr.Bytes()))
	}
	return ok, problems, nil
}

type limitReader struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("publisher verify-blobs wrote too much")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
