package cdns

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// vaultServer is a real `vault server -dev` on a free loopback port, from the
// binary scripts/build-vault.sh builds (CUSTODY_VAULT_BIN).
type vaultServer struct {
	addr string
	cmd  *exec.Cmd
}

const vaultRoot = "custody-test-root"

func startVault(t *testing.T) *vaultServer {
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
	s := &vaultServer{addr: "http://" + addr}
	s.cmd = exec.Command(bin, "server", "-dev", "-dev-root-token-id="+vaultRoot, "-dev-listen-address="+addr, "-dev-no-store-token")
	s.cmd.Env = append(os.Environ(), "VAULT_DISABLE_MLOCK=true", "HOME="+t.TempDir())
	out, _ := s.cmd.StdoutPipe()
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start vault: %v", err)
	}
	go io.Copy(io.Discard, out)
	t.Cleanup(func() { s.cmd.Process.Kill(); s.cmd.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := s.api(vaultRoot, "GET", "sys/health", nil); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vault never became healthy")
		}
		time.Sleep(200 * time.Millisecond)
	}
	return s
}

func (s *vaultServer) api(token, method, path string, body any) (map[string]any, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.addr+"/v1/"+path, r)
	req.Header.Set("X-Vault-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: HTTP %d: %v", method, path, resp.StatusCode, out["errors"])
	}
	return out, nil
}

func (s *vaultServer) must(t *testing.T, method, path string, body any) map[string]any {
	t.Helper()
	out, err := s.api(vaultRoot, method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestVaultKeys reads CDN keys from a real Vault dev server with a token
// that has only the broker's policy (deploy/vault/cdn-broker-policy.hcl),
// and refuses to start when the secret, the field, the permission or Vault
// itself is missing.
func TestVaultKeys(t *testing.T) {
	v := startVault(t)
	v.must(t, "POST", "sys/mounts/custody-cdn", map[string]any{"type": "kv", "options": map[string]any{"version": "2"}})
	v.must(t, "POST", "sys/mounts/other", map[string]any{"type": "kv", "options": map[string]any{"version": "2"}})
	key := base64.URLEncoding.EncodeToString([]byte("0123456789abcdef"))
	// A freshly mounted KV v2 needs a moment before it accepts writes.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := v.api(vaultRoot, "POST", "custody-cdn/data/gcdn", map[string]any{"data": map[string]any{"key-2": key, "not-a-string": 7}})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	v.must(t, "POST", "other/data/gcdn", map[string]any{"data": map[string]any{"key-2": key}})
	_, file, _, _ := runtime.Caller(0)
	policy, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "deploy", "vault", "cdn-broker-policy.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	v.must(t, "PUT", "sys/policies/acl/custody-cdn-broker", map[string]any{"policy": string(policy)})
	tok := v.must(t, "POST", "auth/token/create", map[string]any{"policies": []string{"custody-cdn-broker"}, "no_default_policy": true})
	token := tok["auth"].(map[string]any)["client_token"].(string)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
	vault, err := NewVault(v.addr, tokenFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	load := func(path, field string) error {
		cfg := fmt.Sprintf(`{"cdns": [{"name": "gcdn", "kind": "cloud-cdn", "base_url": "https://g.example",
		  "key": {"name": "key-2", "vault": {"path": %q, "field": %q}}}]}`, path, field)
		cs, err := Load(t.Context(), writeConfig(t, t.TempDir(), cfg), ttl, now, vault)
		if err != nil {
			return err
		}
		s, err := cs[0].Mint(hexDigest, now, now.Add(ttl))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(s.URL, "KeyName=key-2&Signature=") {
			t.Errorf("URL %s", s.URL)
		}
		return nil
	}
	if err := load("custody-cdn/data/gcdn", "key-2"); err != nil {
		t.Fatalf("read key from Vault: %v", err)
	}
	// Purge credentials come through the same reader.
	v.must(t, "POST", "custody-cdn/data/gcdn-purge", map[string]any{"data": map[string]any{"sa": `{"type": "service_account"}`}})
	pcfg := fmt.Sprintf(`{"cdns": [{"name": "gcdn", "kind": "cloud-cdn", "base_url": "https://g.example", "key": {"name": "key-2", "vault": {"path": "custody-cdn/data/gcdn", "field": "key-2"}},
	  "purge": {"project": "p", "url_map": "m", "credentials": {"vault": {"path": %q, "field": "sa"}}}}]}`, "custody-cdn/data/gcdn-purge")
	if cs, err := Load(t.Context(), writeConfig(t, t.TempDir(), pcfg), ttl, now, vault); err != nil || string(cs[0].Purge().Credentials) != `{"type": "service_account"}` {
		t.Fatalf("purge credentials from Vault: %v", err)
	}
	if _, err := Load(t.Context(), writeConfig(t, t.TempDir(), strings.Replace(pcfg, "gcdn-purge", "gcdn-nope", 1)), ttl, now, vault); err == nil || !strings.Contains(err.Error(), "CDN gcdn purge.credentials") {
		t.Errorf("missing purge secret in Vault: %v", err)
	}
	for _, tc := range []struct{ path, field, want string }{
		{"custody-cdn/data/nope", "key-2", "does not exist"},
		{"custody-cdn/data/gcdn", "key-3", `no field "key-3"`},
		{"custody-cdn/data/gcdn", "not-a-string", "not a non-empty string"},
		{"other/data/gcdn", "key-2", "denied"},
		{"custody-cdn/data/../../sys/mounts", "x", "KV v2 API path"},
		{"custody-cdn/metadata/gcdn", "x", "KV v2 API path"},
	} {
		err := load(tc.path, tc.field)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s#%s: err = %v, want %q", tc.path, tc.field, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), token) {
			t.Errorf("error prints the Vault token: %v", err)
		}
	}
	bad := filepath.Join(dir, "bad-token")
	os.WriteFile(bad, []byte("hvs.not-a-token"), 0o600)
	bv, _ := NewVault(v.addr, bad, nil)
	if _, err := bv.ReadField(t.Context(), "custody-cdn/data/gcdn", "key-2"); err == nil || !strings.Contains(err.Error(), "denied") {
		t.Errorf("bad token: %v", err)
	}
	// Vault down: fail closed with a clear error.
	v.cmd.Process.Kill()
	v.cmd.Wait()
	if err := load("custody-cdn/data/gcdn", "key-2"); err == nil || !strings.Contains(err.Error(), "check that Vault is running") {
		t.Errorf("vault down: err = %v", err)
	}
}

func TestNewVaultRefuses(t *testing.T) {
	dir := t.TempDir()
	tf := filepath.Join(dir, "t")
	os.WriteFile(tf, []byte("two tokens\n"), 0o600)
	empty := filepath.Join(dir, "e")
	os.WriteFile(empty, nil, 0o600)
	for name, tc := range map[string]struct{ addr, file string }{
		"bad addr":     {"vault:8200", tf},
		"addr w/ path": {"http://127.0.0.1:8200/v1", tf},
		"no file":      {"http://127.0.0.1:8200", filepath.Join(dir, "none")},
		"two tokens":   {"http://127.0.0.1:8200", tf},
		"empty":        {"http://127.0.0.1:8200", empty},
	} {
		if _, err := NewVault(tc.addr, tc.file, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
