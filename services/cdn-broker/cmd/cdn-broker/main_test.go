package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRefusesToStartWithBadCDNConfig: a CDN configuration that is malformed
// or names a missing key stops the broker at start with an error that says
// which file and key, before it listens.
func TestRefusesToStartWithBadCDNConfig(t *testing.T) {
	dir := t.TempDir()
	tokenKey, root := writeTokenKeyAndRoot(t, dir)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	missing := filepath.Join(dir, "missing.key")
	gkey := write("g.key", "MDEyMzQ1Njc4OWFiY2RlZg==")
	secret := write("secret", "s3cr3t-value\n")
	purgeCfg := func(name, purge string) string {
		return write(name, fmt.Sprintf(`{"cdns": [{"name": "g", "kind": "cloud-cdn", "base_url": "https://g.example", "key": {"name": "k1", "file": %q}, "purge": {%s}}]}`, gkey, purge))
	}
	saFile := write("sa.json", `{"type": "service_account", "client_email": "a@b", "private_key": "x", "token_uri": "https://oauth2.googleapis.com/token"}`)
	queue := []string{"--state-dir", dir, "--catalog-addr", "127.0.0.1:1"}
	for name, tc := range map[string]struct {
		extra []string
		want  string
	}{
		"missing key file": {[]string{"--cdn-config-file", write("a.json", fmt.Sprintf(`{"cdns": [{"name": "g", "kind": "cloud-cdn", "base_url": "https://g.example", "key": {"name": "k1", "file": %q}}]}`, missing))},
			"CDN g key k1: read key file"},
		"malformed":               {[]string{"--cdn-config-file", write("b.json", `{"cdns": [{"name": "g", "secret": "x"}]}`)}, "invalid JSON"},
		"missing config":          {[]string{"--cdn-config-file", filepath.Join(dir, "none.json")}, "read CDN configuration"},
		"vault half set":          {[]string{"--vault-addr", "http://127.0.0.1:8200"}, "--vault-addr and --vault-token-file go together"},
		"state dir alone":         {[]string{"--state-dir", dir}, "--state-dir and --catalog-addr go together"},
		"edge without queue":      {[]string{"--edge-grpc", "dev=127.0.0.1:1"}, "--edge-grpc needs --state-dir"},
		"edge no name":            {[]string{"--state-dir", dir, "--catalog-addr", "127.0.0.1:1", "--edge-grpc", "127.0.0.1:1"}, "want NAME=HOST:PORT"},
		"edge path name":          {[]string{"--state-dir", dir, "--catalog-addr", "127.0.0.1:1", "--edge-grpc", "a/../b=127.0.0.1:1"}, "want NAME=HOST:PORT"},
		"vault no token":          {[]string{"--vault-addr", "http://127.0.0.1:8200", "--vault-token-file", missing}, "read Vault token file"},
		"token key bad option":    {[]string{"--token-private-key-file", tokenKey + ",valid-until=2027-01-01T00:00:00Z"}, "want FILE[,valid-from=RFC3339]"},
		"token key bad time":      {[]string{"--token-private-key-file", tokenKey + ",valid-from=tomorrow"}, "want FILE[,valid-from=RFC3339]"},
		"token keys same time":    {[]string{"--token-private-key-file", tokenKey + ",valid-from=2027-01-01T00:00:00Z", "--token-private-key-file", tokenKey + ",valid-from=2027-01-01T01:00:00+01:00"}, "valid from the same time"},
		"two keys from the start": {[]string{"--token-private-key-file", tokenKey, "--token-private-key-file", tokenKey}, "valid from the same time"},
		"issued file alone":       {[]string{"--issued-digests-file", filepath.Join(dir, "issued.json")}, "--issued-digests-file needs --state-dir"},
		"issued max too big":      {[]string{"--issued-digests-max", "2000000"}, "--issued-digests-max 2000000: want 1 to 1000000"},
		"no trust root":           {[]string{"--trust-root", ""}, "--trust-root is required"},
		"trust root missing":      {[]string{"--trust-root", missing}, "--trust-root: open"},
		"trust root not signed":   {[]string{"--trust-root", secret}, "--trust-root " + secret},
		"issued retention zero":   {[]string{"--issued-digests-retention", "0s"}, "--issued-digests-retention 0s: must be positive"},
		"token key missing":       {[]string{"--token-private-key-file", missing + ",valid-from=2027-01-01T00:00:00Z"}, "missing.key"},
		"purge without queue": {[]string{"--cdn-config-file", purgeCfg("p1.json", fmt.Sprintf(`"project": "p", "url_map": "m", "credentials": {"file": %q}`, saFile))},
			"CDN purge sections need --state-dir and --catalog-addr"},
		"purge not a service account": {append([]string{"--cdn-config-file", purgeCfg("p2.json", fmt.Sprintf(`"project": "p", "url_map": "m", "credentials": {"file": %q}`, secret))}, queue...),
			"CDN g purge: credentials: want a service account's JSON key"},
		"purge bad project": {append([]string{"--cdn-config-file", purgeCfg("p3.json", fmt.Sprintf(`"project": "Bad_P", "url_map": "m", "credentials": {"file": %q}`, saFile))}, queue...),
			"CDN g purge: purge: invalid input: Cloud CDN project"},
		"purge bad CA file": {append([]string{"--cdn-config-file", purgeCfg("p4.json", fmt.Sprintf(`"project": "p", "url_map": "m", "credentials": {"file": %q}, "ca_file": %q`, saFile, secret))}, queue...),
			"CDN g purge: ca_file " + secret + ": no PEM certificate"},
		"purge credential missing": {append([]string{"--cdn-config-file", purgeCfg("p5.json", fmt.Sprintf(`"project": "p", "url_map": "m", "credentials": {"file": %q}`, missing))}, queue...),
			"CDN g purge.credentials: read key file"},
	} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"--trust-domain", "custody.test", "--svid-dir", dir, "--signer-addr", "127.0.0.1:1", "--gatekeeper-addr", "127.0.0.1:1",
				"--token-private-key-file", tokenKey, "--trust-root", root, "--edge-url", "https://edge.example"}, tc.extra...)
			var stderr bytes.Buffer
			err := run(t.Context(), args, func(string) string { return "" }, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run = %v, want an error mentioning %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cr3t-value") || strings.Contains(stderr.String(), "s3cr3t-value") {
				t.Fatalf("a credential in the error or log: %v", err)
			}
		})
	}
}
