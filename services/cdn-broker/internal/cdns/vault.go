package cdns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Vault reads fields of KV version 2 secrets with a token read from a file.
type Vault struct {
	addr   *url.URL
	token  string
	client *http.Client
}

// NewVault returns a reader for the Vault at addr (http(s)://host:port)
// with the token in tokenFile.
func NewVault(addr, tokenFile string, client *http.Client) (*Vault, error) {
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("vault address %q: want http(s)://host:port", addr)
	}
	tok, err := readBounded(tokenFile, 4096)
	if err != nil {
		return nil, fmt.Errorf("read Vault token file: %w", err)
	}
	t := strings.TrimSpace(string(tok))
	if t == "" || strings.ContainsAny(t, " \r\n\t") {
		return nil, errors.New("the Vault token file must hold one token")
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &Vault{addr: u, token: t, client: client}, nil
}

// ReadField returns the string value of field in the KV v2 secret at path
// (API path under /v1/, containing "/data/"). Errors never include the
// token or the value.
func (v *Vault) ReadField(ctx context.Context, path, field string) ([]byte, error) {
	if !strings.Contains(path, "/data/") || strings.Contains(path, "..") || strings.ContainsAny(path, "?#%") || strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("vault path %q: want a KV v2 API path like secret/data/cdn/name", path)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.addr.Scheme+"://"+v.addr.Host+"/v1/"+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Vault-Token", v.token)
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read %s from Vault: %w: check that Vault is running and unsealed", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20+1))
	if err != nil {
		return nil, fmt.Errorf("read %s from Vault: %w", path, err)
	}
	if len(body) > 1<<20 {
		return nil, fmt.Errorf("read %s from Vault: response larger than 1 MiB", path)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, fmt.Errorf("vault secret %s does not exist: write it with `vault kv put`", path)
	case http.StatusForbidden:
		return nil, fmt.Errorf("vault denied reading %s: give the broker's token a policy with read on it", path)
	default:
		return nil, fmt.Errorf("read %s from Vault: HTTP %d", path, resp.StatusCode)
	}
	var out struct {
		Data struct {
			Data map[string]json.RawMessage `json:"data"`
		} `json:"data"`
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&out); err != nil {
		return nil, fmt.Errorf("vault secret %s: not a KV v2 response", path)
	}
	raw, ok := out.Data.Data[field]
	if !ok {
		return nil, fmt.Errorf("vault secret %s has no field %q", path, field)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || s == "" {
		return nil, fmt.Errorf("vault secret %s field %q is not a non-empty string", path, field)
	}
	return []byte(s), nil
}
