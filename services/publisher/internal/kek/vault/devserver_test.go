package vault_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// devServer is a real `vault server -dev` on a free loopback port, from the
// binary scripts/build-vault.sh builds (CUSTODY_VAULT_BIN).
type devServer struct {
	addr, root, unsealKey string
	cmd                   *exec.Cmd
	done                  chan struct{}
	mu                    sync.Mutex
	log                   strings.Builder
}

var unsealRE = regexp.MustCompile(`Unseal Key: (\S+)`)

func startVault(t *testing.T) *devServer {
	t.Helper()
	bin := os.Getenv("CUSTODY_VAULT_BIN")
	if bin == "" {
		if os.Getenv("CUSTODY_TEST_REQUIRE_VAULT") == "1" {
			t.Fatal("CUSTODY_TEST_REQUIRE_VAULT=1 but CUSTODY_VAULT_BIN is unset")
		}
		t.Skip("no Vault binary: set CUSTODY_VAULT_BIN (make test builds one with scripts/build-vault.sh)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &devServer{addr: "http://" + addr, root: "custody-test-root", done: make(chan struct{})}
	s.cmd = exec.Command(bin, "server", "-dev", "-dev-root-token-id="+s.root, "-dev-listen-address="+addr, "-dev-no-store-token")
	s.cmd.Env = append(os.Environ(), "VAULT_DISABLE_MLOCK=true", "HOME="+t.TempDir())
	out, _ := s.cmd.StdoutPipe()
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start vault: %v", err)
	}
	unseal := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.mu.Lock()
			s.log.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			if m := unsealRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case unseal <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, out)
	}()
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	select {
	case s.unsealKey = <-unseal:
	case <-s.done:
		t.Fatalf("vault exited at start:\n%s", s.output())
	case <-time.After(60 * time.Second):
		t.Fatalf("vault printed no unseal key within 60s:\n%s", s.output())
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.do(t, http.MethodGet, "sys/health", nil) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("vault never became healthy:\n%s", s.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.must(t, "POST", "sys/mounts/custody-kek", map[string]any{"type": "transit"})
	s.must(t, "POST", "custody-kek/keys/publisher", map[string]any{"type": "aes256-gcm96"})
	_, file, _, _ := runtime.Caller(0)
	policy, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "..", "deploy", "vault", "publisher-kek-policy.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	s.must(t, "PUT", "sys/policies/acl/custody-publisher-kek", map[string]any{"policy": string(policy)})
	return s
}

func (s *devServer) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// do calls the Vault API with the root token and returns the decoded
// reply's "data" or an error for any non-2xx status.
func (s *devServer) do(t *testing.T, method, path string, body any) error {
	_, err := s.call(t, method, path, body)
	return err
}

func (s *devServer) call(t *testing.T, method, path string, body any) (map[string]any, error) {
	return s.callAs(s.root, method, path, body)
}

func (s *devServer) callAs(token, method, path string, body any) (map[string]any, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(context.Background(), method, s.addr+"/v1/"+path, r)
	req.Header.Set("X-Vault-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Data   map[string]any `json:"data"`
		Auth   map[string]any `json:"auth"`
		Errors []string       `json:"errors"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: HTTP %d: %v", method, path, resp.StatusCode, out.Errors)
	}
	if out.Auth != nil {
		return out.Auth, nil
	}
	return out.Data, nil
}

func (s *devServer) must(t *testing.T, method, path string, body any) map[string]any {
	t.Helper()
	d, err := s.call(t, method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// publisherToken writes a token holding only the publisher KEK policy to a
// file and returns its path.
func (s *devServer) publisherToken(t *testing.T) string {
	t.Helper()
	auth := s.must(t, "POST", "auth/token/create", map[string]any{"policies": []string{"custody-publisher-kek"}, "no_default_policy": true, "ttl": "1h"})
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(auth["client_token"].(string)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (s *devServer) seal(t *testing.T) { s.must(t, "PUT", "sys/seal", nil) }

func (s *devServer) unseal(t *testing.T) {
	s.must(t, "PUT", "sys/unseal", map[string]any{"key": s.unsealKey})
}

func (s *devServer) stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
	}
	<-s.done
}
