// Package s3test starts a real S3-compatible server (versitygw, through
// scripts/versitygw-up.sh) for tests and hands out empty buckets on it.
package s3test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	s3store "github.com/custody-dev/custody/services/publisher/internal/blobstore/s3"
)

// BinEnv names the versitygw binary; RequireEnv=1 makes its absence a
// failure instead of a skip.
const (
	BinEnv     = "CUSTODY_VERSITYGW_BIN"
	RequireEnv = "CUSTODY_TEST_REQUIRE_S3"
)

// Server is a running gateway.
type Server struct {
	Endpoint, AccessKeyFile, SecretKeyFile string
	Dir                                    string
	pid                                    int
	stopOnce                               sync.Once
}

// Start runs scripts/versitygw-up.sh in a temporary directory and stops
// the server when t ends. Skips (or fails, with RequireEnv=1) when the
// binary is missing.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := os.Getenv(BinEnv)
	if bin == "" {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%s=1 but %s is unset (make test-deps-s3 builds versitygw)", RequireEnv, BinEnv)
		}
		t.Skipf("no S3 server: set %s (scripts/build-versitygw.sh builds one)", BinEnv)
	}
	dir := t.TempDir()
	cmd := exec.Command(filepath.Join(repoRoot(), "scripts", "versitygw-up.sh"), filepath.Join(dir, "gw"))
	cmd.Env = append(os.Environ(), "CUSTODY_VERSITYGW_BIN="+bin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("versitygw-up.sh: %v\n%s", err, stderr.String())
	}
	s := &Server{Dir: filepath.Join(dir, "gw")}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "CUSTODY_TEST_S3_ENDPOINT":
			s.Endpoint = v
		case "CUSTODY_TEST_S3_ACCESS_KEY_FILE":
			s.AccessKeyFile = v
		case "CUSTODY_TEST_S3_SECRET_KEY_FILE":
			s.SecretKeyFile = v
		case "CUSTODY_TEST_S3_PID":
			s.pid, _ = strconv.Atoi(v)
		}
	}
	if s.Endpoint == "" || s.pid == 0 {
		t.Fatalf("versitygw-up.sh printed no endpoint:\n%s", out)
	}
	t.Cleanup(s.Stop)
	return s
}

// Stop kills the gateway (idempotent).
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if p, err := os.FindProcess(s.pid); err == nil {
			p.Signal(syscall.SIGKILL)
			p.Wait()
		}
	})
}

// Bucket creates a new empty bucket and returns a store config for it.
func (s *Server) Bucket(t testing.TB) s3store.Config {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	name := "custody-" + hex.EncodeToString(b)
	ak, _ := os.ReadFile(s.AccessKeyFile)
	sk, _ := os.ReadFile(s.SecretKeyFile)
	c := s3.New(s3.Options{Region: "us-east-1", UsePathStyle: true, BaseEndpoint: aws.String(s.Endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(strings.TrimSpace(string(ak)), strings.TrimSpace(string(sk)), "")})
	if _, err := c.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: &name}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return s3store.Config{Endpoint: s.Endpoint, Region: "us-east-1", Bucket: name, PathStyle: true,
		AccessKeyFile: s.AccessKeyFile, SecretKeyFile: s.SecretKeyFile}
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "..", "..")
}
