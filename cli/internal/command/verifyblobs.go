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

// findPublisher finds the publisher binary next to custody, then on PATH.
func findPublisher() (string, error) {
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), "publisher"); isFile(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("publisher"); err == nil {
		return p, nil
	}
	return "", errors.New("the publisher binary decrypts blobs and is not next to custody or on PATH: pass --publisher-bin, or --no-decrypt")
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
