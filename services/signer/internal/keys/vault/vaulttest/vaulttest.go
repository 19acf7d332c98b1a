// Package vaulttest starts a real Vault dev server for tests, from the
// binary scripts/build-vault.sh builds (CUSTODY_VAULT_BIN names it).
package vaulttest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/custody-dev/custody/libs/syncbuf"
)

// BinEnv names the vault binary; RequireEnv=1 makes a missing binary an
// error instead of a skip.
const (
	BinEnv     = "CUSTODY_VAULT_BIN"
	RequireEnv = "CUSTODY_TEST_REQUIRE_VAULT"
)

// ErrNoVault means no binary was configured and none is required.
var ErrNoVault = errors.New("no Vault binary: set " + BinEnv + " (make test builds one with scripts/build-vault.sh)")

// Server is a running dev server with Transit enabled at "transit" and the
// signer policy loaded as "custody-signer".
type Server struct {
	Addr      string
	RootToken string
	UnsealKey string
	Root      *api.Client

	cmd  *exec.Cmd
	done chan struct{}
	log  *syncBuffer
}

// syncBuffer is the output a test reads while it is written.
type syncBuffer = syncbuf.Buffer

var unsealRE = regexp.MustCompile(`Unseal Key: (\S+)`)

// Start runs `vault server -dev` on a free loopback port. It returns
// ErrNoVault if the binary is not configured and RequireEnv is unset.
func Start() (*Server, error) {
	bin := os.Getenv(BinEnv)
	if bin == "" {
		if os.Getenv(RequireEnv) == "1" {
			return nil, fmt.Errorf("%s=1 but %s is unset", RequireEnv, BinEnv)
		}
		return nil, ErrNoVault
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{Addr: "http://" + addr, RootToken: "custody-test-root", done: make(chan struct{}), log: &syncBuffer{}}
	s.cmd = exec.Command(bin, "server", "-dev", "-dev-root-token-id="+s.RootToken, "-dev-listen-address="+addr, "-dev-no-store-token")
	s.cmd.Env = append(os.Environ(), "VAULT_DISABLE_MLOCK=true", "HOME="+os.TempDir())
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s.cmd.Stderr = s.log
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start vault: %w", err)
	}
	unseal := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			s.log.Write([]byte(line + "\n"))
			if m := unsealRE.FindStringSubmatch(line); m != nil && !sent {
				unseal <- m[1]
				sent = true
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() { s.cmd.Wait(); close(s.done) }()
	select {
	case s.UnsealKey = <-unseal:
	case <-s.done:
		return nil, fmt.Errorf("vault exited at start:\n%s", s.log.String())
	case <-time.After(60 * time.Second):
		s.Stop()
		return nil, fmt.Errorf("vault did not print its unseal key within 60s:\n%s", s.log.String())
	}
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	s.Root, err = api.NewClient(cfg)
	if err != nil {
		s.Stop()
		return nil, err
	}
	s.Root.SetToken(s.RootToken)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if _, err := s.Root.Sys().HealthWithContext(ctx); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			s.Stop()
			return nil, fmt.Errorf("vault at %s never became healthy:\n%s", s.Addr, s.log.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := s.Root.Sys().MountWithContext(ctx, "transit", &api.MountInput{Type: "transit"}); err != nil {
		s.Stop()
		return nil, fmt.Errorf("enable transit: %w", err)
	}
	policy, err := os.ReadFile(PolicyFile())
	if err != nil {
		s.Stop()
		return nil, err
	}
	if err := s.Root.Sys().PutPolicyWithContext(ctx, "custody-signer", string(policy)); err != nil {
		s.Stop()
		return nil, fmt.Errorf("load signer policy: %w", err)
	}
	return s, nil
}

// PolicyFile is deploy/vault/signer-policy.hcl in this repository.
func PolicyFile() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "..", "..", "deploy", "vault", "signer-policy.hcl")
}

// Client returns a root client whose connection pool keeps up to conns
// idle connections, so n concurrent callers reuse connections.
func (s *Server) Client(conns int) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	cfg.MaxRetries = 0
	if t, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = conns
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(s.RootToken)
	return c, nil
}

// SignerToken creates a token with only the signer policy.
func (s *Server) SignerToken(ctx context.Context) (string, error) {
	sec, err := s.Root.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{
		Policies: []string{"custody-signer"}, NoDefaultPolicy: true, TTL: "1h",
	})
	if err != nil {
		return "", err
	}
	return sec.Auth.ClientToken, nil
}

// Seal seals the server; Unseal unseals it with the dev unseal key.
func (s *Server) Seal(ctx context.Context) error { return s.Root.Sys().SealWithContext(ctx) }

// Unseal unseals the server.
func (s *Server) Unseal(ctx context.Context) error {
	st, err := s.Root.Sys().UnsealWithContext(ctx, s.UnsealKey)
	if err != nil {
		return err
	}
	if st.Sealed {
		return errors.New("vault still sealed after unseal")
	}
	return nil
}

// Stop kills the server and waits for it.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
	}
	<-s.done
}

// Log is what the server printed.
func (s *Server) Log() string { return s.log.String() }
