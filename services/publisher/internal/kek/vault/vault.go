// Package vault is the production key-encryption back end: data keys are
// wrapped and unwrapped by Vault Transit on an AES-256-GCM key that never
// leaves Vault (deploy/vault/publisher-kek-policy.hcl grants only encrypt,
// decrypt and rewrap on it).
package vault

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/custody-dev/custody/services/publisher/internal/kek"
)

// Config says which Transit key wraps data keys. The token is read from
// TokenFile on every call, so a renewed token is picked up without a
// restart.
type Config struct {
	Addr      string // https://vault.example:8200
	TokenFile string
	CAFile    string // optional: PEM roots for Vault's TLS certificate
	Mount     string // Transit mount, default "custody-kek"
	Key       string // key name, default "publisher"
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.Addr); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("vault kek: address %q: want https://host:port", c.Addr))
	}
	if c.TokenFile == "" {
		errs = append(errs, errors.New("vault kek: a token file is required"))
	}
	return errors.Join(errs...)
}

// KEK is a Vault Transit key. Safe for concurrent use.
type KEK struct {
	cfg    Config
	client *http.Client
	base   string
}

var _ kek.KEK = (*KEK)(nil)

// New returns the back end; it does not contact Vault.
func New(cfg Config) (*KEK, error) {
	if cfg.Mount == "" {
		cfg.Mount = "custody-kek"
	}
	if cfg.Key == "" {
		cfg.Key = "publisher"
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("vault kek: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("vault kek: no certificates in %s", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &KEK{cfg: cfg, client: &http.Client{Transport: tr, Timeout: 15 * time.Second},
		base: strings.TrimSuffix(cfg.Addr, "/") + "/v1/" + cfg.Mount + "/"}, nil
}

// Name implements kek.KEK.
func (k *KEK) Name() string { return "vault" }

type reply struct {
	Data struct {
		Ciphertext string `json:"ciphertext"`
		Plaintext  string `json:"plaintext"`
	} `json:"data"`
	Errors []string `json:"errors"`
}

// call POSTs body to op/key and decodes the reply. Vault down, sealed,
// refusing for now or denying the token is kek.ErrUnavailable; a 400 on
// decrypt or rewrap is kek.ErrUnwrap.
func (k *KEK) call(ctx context.Context, op string, body map[string]string) (*reply, error) {
	tok, err := os.ReadFile(k.cfg.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("vault %s: %w: read token: %v", op, kek.ErrUnavailable, err)
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, k.base+op+"/"+url.PathEscape(k.cfg.Key), bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("vault %s: %w", op, err)
	}
	req.Header.Set("X-Vault-Token", strings.TrimSpace(string(tok)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("vault %s at %s: %w: %v", op, k.cfg.Addr, kek.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	var r reply
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil && resp.StatusCode == http.StatusOK {
		return nil, fmt.Errorf("vault %s: decode reply: %w", op, err)
	}
	msg := strings.Join(r.Errors, "; ")
	switch {
	case resp.StatusCode == http.StatusOK:
		return &r, nil
	case resp.StatusCode == http.StatusBadRequest && op != "encrypt":
		return nil, fmt.Errorf("vault %s: %w: %s", op, kek.ErrUnwrap, msg)
	case resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("vault %s: %w: permission denied (check the publisher's token and deploy/vault/publisher-kek-policy.hcl): %s", op, kek.ErrUnavailable, msg)
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return nil, fmt.Errorf("vault %s at %s: %w: HTTP %d: %s", op, k.cfg.Addr, kek.ErrUnavailable, resp.StatusCode, msg)
	}
	return nil, fmt.Errorf("vault %s: HTTP %d: %s", op, resp.StatusCode, msg)
}

// Wrap implements kek.KEK with transit/encrypt.
func (k *KEK) Wrap(ctx context.Context, dataKey []byte) (string, error) {
	r, err := k.call(ctx, "encrypt", map[string]string{"plaintext": base64.StdEncoding.EncodeToString(dataKey)})
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(r.Data.Ciphertext, "vault:v") {
		return "", fmt.Errorf("vault encrypt: unexpected ciphertext %.12q", r.Data.Ciphertext)
	}
	return r.Data.Ciphertext, nil
}

// Unwrap implements kek.KEK with transit/decrypt.
func (k *KEK) Unwrap(ctx context.Context, wrapped string) ([]byte, error) {
	if !strings.HasPrefix(wrapped, "vault:v") {
		return nil, fmt.Errorf("%w: not a Vault-wrapped key", kek.ErrUnwrap)
	}
	r, err := k.call(ctx, "decrypt", map[string]string{"ciphertext": wrapped})
	if err != nil {
		return nil, err
	}
	dk, err := base64.StdEncoding.DecodeString(r.Data.Plaintext)
	if err != nil {
		return nil, fmt.Errorf("vault decrypt: %w", err)
	}
	return dk, nil
}

// Rewrap implements kek.KEK with transit/rewrap: Vault decrypts and
// re-encrypts inside, under the key's newest version.
func (k *KEK) Rewrap(ctx context.Context, wrapped string) (string, error) {
	if !strings.HasPrefix(wrapped, "vault:v") {
		return "", fmt.Errorf("%w: not a Vault-wrapped key", kek.ErrUnwrap)
	}
	r, err := k.call(ctx, "rewrap", map[string]string{"ciphertext": wrapped})
	if err != nil {
		return "", err
	}
	return r.Data.Ciphertext, nil
}
