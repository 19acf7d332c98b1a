// Package vault keeps the signer's keys in HashiCorp Vault's Transit
// secrets engine. Keys are created non-exportable; the signer's token needs
// only the capabilities in deploy/vault/signer-policy.hcl (sign, read public
// keys). Creating and rotating keys need a custodian's token.
package vault

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/services/signer/internal/keys"
)

// MaxBatch is the most messages sent in one batch_input request.
const MaxBatch = 256

// MaxInFlight is how many batch requests per key version the signer keeps
// outstanding: few, so that under load batches grow instead of requests
// multiplying (each request costs both Vault and the signer more than a
// message in a batch does).
const MaxInFlight = 2

// Config says how to reach Vault.
type Config struct {
	// Address is Vault's URL, e.g. https://vault.example:8200.
	Address string
	// TokenFile holds the token. It is read at start and again whenever
	// Vault refuses the token, so an agent that renews it into the file
	// (Vault Agent's file sink) keeps the signer working without restarts.
	TokenFile string
	// Token is used when TokenFile is empty (tests).
	Token string
	// Mount is the Transit mount path; default "transit".
	Mount string
	// CACertFile verifies Vault's TLS certificate; empty uses system roots.
	CACertFile string
	// Timeout bounds each request; default 10s.
	Timeout time.Duration
}

// Backend is a keys.Backend on Vault Transit.
type Backend struct {
	cfg    Config
	client *api.Client

	mu   sync.Mutex
	algs map[string]string // key name → algorithm, learned from reads
}

var (
	_ keys.Backend     = (*Backend)(nil)
	_ keys.BatchSigner = (*Backend)(nil)
)

// Open returns a back end for cfg. It does not contact Vault: a Vault that
// is down or sealed at start makes calls fail with keys.ErrUnavailable
// until it returns.
func Open(cfg Config) (*Backend, error) {
	if cfg.Address == "" {
		return nil, fmt.Errorf("%w: vault: an address is required", keys.ErrInvalid)
	}
	if cfg.Mount == "" {
		cfg.Mount = "transit"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	ac := api.DefaultConfig()
	if ac.Error != nil {
		return nil, fmt.Errorf("vault client: %w", ac.Error)
	}
	ac.Address = cfg.Address
	ac.Timeout = cfg.Timeout
	ac.MaxRetries = 0 // the signer fails closed; its callers retry
	if t, ok := ac.HttpClient.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = 64 // concurrent signing
	}
	if cfg.CACertFile != "" {
		if err := ac.ConfigureTLS(&api.TLSConfig{CACert: cfg.CACertFile}); err != nil {
			return nil, fmt.Errorf("vault TLS: %w", err)
		}
	}
	client, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	client.ClearNamespace()
	b := &Backend{cfg: cfg, client: client, algs: map[string]string{}}
	client.SetToken(cfg.Token)
	if cfg.TokenFile != "" {
		if err := b.reloadToken(); err != nil {
			return nil, err
		}
	} else if cfg.Token == "" {
		return nil, fmt.Errorf("%w: vault: a token file is required", keys.ErrInvalid)
	}
	return b, nil
}

func (b *Backend) reloadToken() error {
	raw, err := os.ReadFile(b.cfg.TokenFile)
	if err != nil {
		return fmt.Errorf("vault token: %w", err)
	}
	tok := strings.TrimSpace(string(raw))
	if tok == "" {
		return fmt.Errorf("vault token file %s is empty", b.cfg.TokenFile)
	}
	b.client.SetToken(tok)
	return nil
}

// Kind implements keys.Backend.
func (b *Backend) Kind() string { return "vault" }

// Close implements keys.Backend.
func (b *Backend) Close() error { return nil }

// call runs one request with the current token; a refused token is
// re-read from its file and the request tried once more.
func (b *Backend) call(ctx context.Context, what, method, path string, body map[string]any) (*api.Secret, error) {
	for attempt := 0; ; attempt++ {
		c := b.client
		var s *api.Secret
		var err error
		switch method {
		case http.MethodGet:
			s, err = c.Logical().ReadWithContext(ctx, path)
		default:
			s, err = c.Logical().WriteWithContext(ctx, path, body)
		}
		if err == nil {
			return s, nil
		}
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusForbidden && attempt == 0 && b.cfg.TokenFile != "" {
			if b.reloadToken() == nil {
				continue
			}
		}
		return nil, b.classify(what, err)
	}
}

// classify maps a Vault client error onto the keys errors with a message
// saying what to check. It never includes the token.
func (b *Backend) classify(what string, err error) error {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%w: vault at %s: %s: %v", keys.ErrUnavailable, b.cfg.Address, what, err)
		}
		return fmt.Errorf("%w: vault at %s is unreachable (%s): check that Vault is running and the address is right", keys.ErrUnavailable, b.cfg.Address, what)
	}
	msg := strings.Join(re.Errors, "; ")
	switch {
	case re.StatusCode == http.StatusServiceUnavailable || strings.Contains(msg, "sealed"):
		return fmt.Errorf("%w: vault at %s is sealed or in standby (%s): unseal it", keys.ErrUnavailable, b.cfg.Address, what)
	case re.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: vault refused the signer's token (%s): check that it has not expired and that its policy allows this (see deploy/vault/signer-policy.hcl)", keys.ErrUnavailable, what)
	case re.StatusCode == http.StatusNotFound, strings.Contains(msg, "not found"), strings.Contains(msg, "invalid key version"),
		strings.Contains(msg, "requested version"), strings.Contains(msg, "does not exist"):
		return fmt.Errorf("%w: vault %s: %s", keys.ErrNotFound, what, msg)
	case re.StatusCode >= 500:
		return fmt.Errorf("%w: vault at %s failed (%s): %s", keys.ErrUnavailable, b.cfg.Address, what, msg)
	}
	return fmt.Errorf("%w: vault %s: %s", keys.ErrInvalid, what, msg)
}

func vaultType(alg string) (string, bool) {
	switch alg {
	case keys.ECDSAP256:
		return "ecdsa-p256", true
	case keys.Ed25519:
		return "ed25519", true
	}
	return "", false
}

// Create implements keys.Backend: a non-exportable key without plaintext
// backup.
func (b *Backend) Create(ctx context.Context, name, algorithm string) (keys.Version, error) {
	if !keys.ValidName(name) {
		return keys.Version{}, fmt.Errorf("%w: key name %q", keys.ErrInvalid, name)
	}
	typ, ok := vaultType(algorithm)
	if !ok {
		return keys.Version{}, fmt.Errorf("%w: algorithm %q: want %s or %s", keys.ErrInvalid, algorithm, keys.ECDSAP256, keys.Ed25519)
	}
	// Transit's create is idempotent and keeps an existing key's type, so
	// look first; two creators racing both see the same key afterwards.
	if _, err := b.Versions(ctx, name); err == nil {
		return keys.Version{}, fmt.Errorf("%w: vault transit key %q", keys.ErrExists, name)
	} else if !errors.Is(err, keys.ErrNotFound) {
		return keys.Version{}, err
	}
	if _, err := b.call(ctx, "create key "+name, http.MethodPost, b.path("keys", name), map[string]any{
		"type": typ, "exportable": false, "allow_plaintext_backup": false,
	}); err != nil {
		return keys.Version{}, err
	}
	vs, err := b.Versions(ctx, name)
	if err != nil {
		return keys.Version{}, err
	}
	if vs[len(vs)-1].Algorithm != algorithm || len(vs) != 1 {
		return keys.Version{}, fmt.Errorf("%w: vault transit key %q", keys.ErrExists, name)
	}
	return vs[0], nil
}

// Rotate implements keys.Backend.
func (b *Backend) Rotate(ctx context.Context, name string) (keys.Version, error) {
	if !keys.ValidName(name) {
		return keys.Version{}, fmt.Errorf("%w: key name %q", keys.ErrInvalid, name)
	}
	if _, err := b.Versions(ctx, name); err != nil {
		return keys.Version{}, err
	}
	if _, err := b.call(ctx, "rotate key "+name, http.MethodPost, b.path("keys", name, "rotate"), nil); err != nil {
		return keys.Version{}, err
	}
	vs, err := b.Versions(ctx, name)
	if err != nil {
		return keys.Version{}, err
	}
	return vs[len(vs)-1], nil
}

// Versions implements keys.Backend from the key's public keys.
func (b *Backend) Versions(ctx context.Context, name string) ([]keys.Version, error) {
	if !keys.ValidName(name) {
		return nil, fmt.Errorf("%w: key name %q", keys.ErrInvalid, name)
	}
	s, err := b.call(ctx, "read key "+name, http.MethodGet, b.path("keys", name), nil)
	if err != nil {
		return nil, err
	}
	if s == nil || s.Data == nil {
		return nil, fmt.Errorf("%w: vault transit key %q", keys.ErrNotFound, name)
	}
	var alg string
	switch s.Data["type"] {
	case "ecdsa-p256":
		alg = keys.ECDSAP256
	case "ed25519":
		alg = keys.Ed25519
	default:
		return nil, fmt.Errorf("%w: vault transit key %q has type %v, not a supported signing key", keys.ErrInvalid, name, s.Data["type"])
	}
	if exp, _ := s.Data["exportable"].(bool); exp {
		return nil, fmt.Errorf("%w: vault transit key %q is exportable: refusing to use it", keys.ErrInvalid, name)
	}
	raw, ok := s.Data["keys"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: vault transit key %q: no public keys in the response", keys.ErrUnavailable, name)
	}
	var out []keys.Version
	for num, v := range raw {
		n, err := strconv.Atoi(num)
		if err != nil {
			continue
		}
		entry, _ := v.(map[string]any)
		pubText, _ := entry["public_key"].(string)
		der, err := publicDER(alg, pubText)
		if err != nil {
			return nil, fmt.Errorf("%w: vault transit key %q version %d: %v", keys.ErrInvalid, name, n, err)
		}
		pub, _, err := attest.ParsePublicKey(der)
		if err != nil {
			return nil, fmt.Errorf("%w: vault transit key %q version %d: %v", keys.ErrInvalid, name, n, err)
		}
		id, err := attest.KeyID(pub)
		if err != nil {
			return nil, err
		}
		created, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(entry["creation_time"]))
		out = append(out, keys.Version{Name: name, Version: n, ID: id, Algorithm: alg, PublicDER: der, Created: created})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: vault transit key %q has no versions", keys.ErrNotFound, name)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	b.mu.Lock()
	b.algs[name] = alg
	b.mu.Unlock()
	return out, nil
}

// publicDER converts Transit's public key text (PEM for ECDSA, base64 of
// the raw key for Ed25519) to PKIX DER.
func publicDER(alg, text string) ([]byte, error) {
	if alg == keys.Ed25519 {
		raw, err := base64.StdEncoding.DecodeString(text)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return nil, errors.New("Ed25519 public key is not 32 base64-encoded bytes")
		}
		return x509.MarshalPKIXPublicKey(ed25519.PublicKey(raw))
	}
	blk, _ := pem.Decode([]byte(text))
	if blk == nil {
		return nil, errors.New("public key is not PEM")
	}
	return blk.Bytes, nil
}

func (b *Backend) path(parts ...string) string {
	return b.cfg.Mount + "/" + strings.Join(parts, "/")
}

// signBody is the request for version of name over inputs.
func (b *Backend) signRequest(ctx context.Context, name string, version int) (string, map[string]any, error) {
	if !keys.ValidName(name) {
		return "", nil, fmt.Errorf("%w: key name %q", keys.ErrInvalid, name)
	}
	if version < 1 {
		return "", nil, fmt.Errorf("%w: vault transit key %q has no version %d", keys.ErrNotFound, name, version)
	}
	b.mu.Lock()
	alg, ok := b.algs[name]
	b.mu.Unlock()
	if !ok {
		if _, err := b.Versions(ctx, name); err != nil {
			return "", nil, err
		}
		b.mu.Lock()
		alg = b.algs[name]
		b.mu.Unlock()
	}
	body := map[string]any{"key_version": version}
	if alg == keys.ECDSAP256 {
		body["marshaling_algorithm"] = "asn1"
		return b.path("sign", name, "sha2-256"), body, nil
	}
	return b.path("sign", name), body, nil
}

// Sign implements keys.Backend.
func (b *Backend) Sign(ctx context.Context, name string, version int, message []byte) ([]byte, error) {
	path, body, err := b.signRequest(ctx, name, version)
	if err != nil {
		return nil, err
	}
	body["input"] = base64.StdEncoding.EncodeToString(message)
	s, err := b.call(ctx, "sign with "+name, http.MethodPost, path, body)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("%w: vault returned no signature", keys.ErrUnavailable)
	}
	return parseSignature(s.Data["signature"], version)
}

// SignBatch implements keys.BatchSigner with Transit's batch_input, in
// requests of at most MaxBatch messages.
func (b *Backend) SignBatch(ctx context.Context, name string, version int, messages [][]byte) ([][]byte, error) {
	out := make([][]byte, 0, len(messages))
	for start := 0; start < len(messages); start += MaxBatch {
		chunk := messages[start:min(start+MaxBatch, len(messages))]
		path, body, err := b.signRequest(ctx, name, version)
		if err != nil {
			return nil, err
		}
		items := make([]map[string]any, len(chunk))
		for i, m := range chunk {
			items[i] = map[string]any{"input": base64.StdEncoding.EncodeToString(m)}
		}
		body["batch_input"] = items
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		resp, err := b.callRaw(ctx, "batch sign with "+name, path, raw)
		if err != nil {
			return nil, err
		}
		sigs, err := parseBatch(resp, len(chunk), version)
		if err != nil {
			var re *api.ResponseError
			if errors.As(err, &re) {
				return nil, b.classify("batch sign with "+name, re)
			}
			return nil, err
		}
		out = append(out, sigs...)
	}
	return out, nil
}

// maxBatchResponse bounds a batch_input response: MaxBatch signatures of a
// few hundred bytes each.
const maxBatchResponse = 1 << 20

// callRaw is call for a request whose response is decoded by the caller:
// the Vault client's generic Secret decoding costs more than the signing
// in a busy signer. It returns the response body.
func (b *Backend) callRaw(ctx context.Context, what, path string, body []byte) ([]byte, error) {
	// The timeout covers reading the body too (Logical's raw write cancels
	// its context when it returns, before the body is read).
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		r := b.client.NewRequest(http.MethodPut, "/v1/"+path)
		r.BodyBytes = body
		resp, err := b.client.RawRequestWithContext(ctx, r) //nolint:staticcheck // the one raw call that leaves the body readable
		if err == nil {
			defer resp.Body.Close()
			out, err := io.ReadAll(io.LimitReader(resp.Body, maxBatchResponse+1))
			if err != nil {
				return nil, b.classify(what, err)
			}
			if len(out) > maxBatchResponse {
				return nil, fmt.Errorf("%w: vault %s: response larger than %d bytes", keys.ErrUnavailable, what, maxBatchResponse)
			}
			return out, nil
		}
		if resp != nil {
			resp.Body.Close()
		}
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusForbidden && attempt == 0 && b.cfg.TokenFile != "" {
			if b.reloadToken() == nil {
				continue
			}
		}
		return nil, b.classify(what, err)
	}
}

// parseBatch decodes a batch_input sign response of n signatures by
// version. A per-item error comes back as an *api.ResponseError.
func parseBatch(body []byte, n, version int) ([][]byte, error) {
	var r struct {
		Data struct {
			BatchResults []struct {
				Signature string `json:"signature"`
				Error     string `json:"error"`
			} `json:"batch_results"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: vault batch response is not JSON: %v", keys.ErrUnavailable, err)
	}
	results := r.Data.BatchResults
	if len(results) != n {
		return nil, fmt.Errorf("%w: vault returned %d signatures for %d messages", keys.ErrUnavailable, len(results), n)
	}
	out := make([][]byte, 0, n)
	for _, item := range results {
		if item.Error != "" {
			return nil, &api.ResponseError{StatusCode: http.StatusBadRequest, Errors: []string{item.Error}}
		}
		sig, err := parseSignature(item.Signature, version)
		if err != nil {
			return nil, err
		}
		out = append(out, sig)
	}
	return out, nil
}

// parseSignature decodes "vault:v<N>:<base64>" and checks the version.
func parseSignature(v any, version int) ([]byte, error) {
	s, _ := v.(string)
	prefix := "vault:v" + strconv.Itoa(version) + ":"
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return nil, fmt.Errorf("%w: vault signature %.20q is not by version %d", keys.ErrUnavailable, s, version)
	}
	sig, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: vault signature is not base64", keys.ErrUnavailable)
	}
	return sig, nil
}
