package signer_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/identity/identitytest"
)

// requireSoftHSM is the env that makes a missing SoftHSM2 a failure.
const requireSoftHSM = "CUSTODY_TEST_REQUIRE_SOFTHSM"

// binDir holds the signer built for this test binary; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// signerBin builds the real signer once per test binary.
var signerBin = sync.OnceValues(func() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	mod := filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "signer")
	dir, err := os.MkdirTemp("", "custody-signer-bin-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "signer")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/signer")
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the signer: %v\n%s", err, out)
	}
	return bin, nil
})

// hsmSigner is a real signer process on its own SoftHSM2 token, serving
// KeyWrapService for the KEKs it was started with.
type hsmSigner struct {
	td        *identitytest.TrustDomain
	dir, addr string
	tokenDir  string
	args, env []string
	bin       string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  bytes.Buffer
}

func startSigner(t *testing.T, keks ...string) *hsmSigner {
	t.Helper()
	const module = "/usr/lib/softhsm/libsofthsm2.so"
	util, err := exec.LookPath("softhsm2-util")
	if _, serr := os.Stat(module); err != nil || serr != nil {
		if os.Getenv(requireSoftHSM) != "" {
			t.Fatalf("SoftHSM2 is not installed (scripts/install-softhsm.sh) and %s is set", requireSoftHSM)
		}
		t.Skip("SoftHSM2 is not installed: run scripts/install-softhsm.sh")
	}
	bin, err := signerBin()
	if err != nil {
		t.Fatal(err)
	}
	s := &hsmSigner{td: identitytest.New(t, "custody.test"), dir: t.TempDir(), bin: bin}
	tokens := filepath.Join(s.dir, "tokens")
	conf := filepath.Join(s.dir, "softhsm2.conf")
	pin := "pin-" + randomHex(4)
	must(t, os.Mkdir(tokens, 0o700))
	must(t, os.WriteFile(conf, fmt.Appendf(nil, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens), 0o600))
	must(t, os.WriteFile(filepath.Join(s.dir, "pin"), []byte(pin+"\n"), 0o600))
	s.env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	init := exec.Command(util, "--init-token", "--free", "--label", "custody-kek-test", "--pin", pin, "--so-pin", randomHex(8))
	init.Env = s.env
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v: %s", err, out)
	}
	ds, _ := filepath.Glob(filepath.Join(tokens, "*"))
	if len(ds) != 1 {
		t.Fatalf("token directories %v", ds)
	}
	s.tokenDir = ds[0]
	svid := filepath.Join(s.dir, "svid")
	must(t, os.Mkdir(svid, 0o700))
	issued, err := s.td.CA.IssueSVID(s.td.ID("/service/signer"), time.Hour)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(svid, identity.SVIDFile), issued.CertPEM, 0o600))
	must(t, os.WriteFile(filepath.Join(svid, identity.SVIDKeyFile), issued.KeyPEM, 0o600))
	must(t, os.WriteFile(filepath.Join(svid, identity.BundleFile), s.td.CA.CertPEM(), 0o600))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	s.addr = l.Addr().String()
	l.Close()
	s.args = []string{"--dev", "--trust-domain", "custody.test", "--svid-dir", svid, "--listen", s.addr,
		"--endpoints-file", filepath.Join(s.dir, "endpoints.json"),
		"--key-backend", "pkcs11", "--pkcs11-module", module, "--pkcs11-token-label", "custody-kek-test",
		"--pkcs11-pin-file", filepath.Join(s.dir, "pin"), "--state-dir", filepath.Join(s.dir, "state"), "--create-keys"}
	for _, k := range keks {
		s.args = append(s.args, "--wrapping-key", k)
	}
	s.start(t)
	t.Cleanup(s.stop)
	return s
}

// start runs the signer on its address and waits until it listens.
func (s *hsmSigner) start(t *testing.T) {
	t.Helper()
	os.Remove(filepath.Join(s.dir, "endpoints.json"))
	s.mu.Lock()
	s.cmd = exec.Command(s.bin, s.args...)
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = &lockedWriter{s}, &lockedWriter{s}
	if err := s.cmd.Start(); err != nil {
		s.mu.Unlock()
		t.Fatal(err)
	}
	done := make(chan struct{})
	s.done = done
	cmd := s.cmd
	s.mu.Unlock()
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var eps map[string]string
		if b, err := os.ReadFile(filepath.Join(s.dir, "endpoints.json")); err == nil && json.Unmarshal(b, &eps) == nil && eps["grpc"] != "" {
			return
		}
		select {
		case <-done:
			t.Fatalf("signer exited at start:\n%s", s.output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("signer did not listen within 60s:\n%s", s.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the signer process (SIGKILL: the HSM must not depend on a
// clean shutdown).
func (s *hsmSigner) stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (s *hsmSigner) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

type lockedWriter struct{ s *hsmSigner }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.log.Write(p)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
