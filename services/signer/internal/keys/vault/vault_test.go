package vault_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/custody-dev/custody/services/signer/internal/keys/keystest"
	"github.com/custody-dev/custody/services/signer/internal/keys/vault"
	"github.com/custody-dev/custody/services/signer/internal/keys/vault/vaulttest"
)

var (
	srv     *vaulttest.Server
	noVault error // why the tests that need Vault skip
)

func TestMain(m *testing.M) {
	var err error
	srv, err = vaulttest.Start()
	switch {
	case errors.Is(err, vaulttest.ErrNoVault):
		noVault = err
	case err != nil:
		fmt.Fprintln(os.Stderr, "vault:", err)
		os.Exit(1)
	}
	code := m.Run()
	if srv != nil {
		srv.Stop()
	}
	os.Exit(code)
}

// requireVault skips a test that needs the dev server when there is none.
func requireVault(t *testing.T) {
	t.Helper()
	if noVault != nil {
		t.Skip(noVault)
	}
}

func open(t *testing.T, token string) *vault.Backend {
	t.Helper()
	requireVault(t)
	b, err := vault.Open(vault.Config{Address: srv.Addr, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	requireVault(t)
	keystest.Run(t, keystest.Options{New: func(t *testing.T) keys.Backend { return open(t, srv.RootToken) }, Prefix: "conf-"})
}

// The signer's token signs and reads public keys; it can do nothing else
// with the keys, in particular never export them.
func TestSignerTokenIsSignOnly(t *testing.T) {
	requireVault(t)
	ctx := t.Context()
	admin := open(t, srv.RootToken)
	v, err := admin.Create(ctx, "policy-key", keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := srv.SignerToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	signer := open(t, tok)
	vs, err := signer.Versions(ctx, "policy-key")
	if err != nil || len(vs) != 1 || vs[0].ID != v.ID {
		t.Fatalf("signer token reads public keys: %v %v", vs, err)
	}
	if _, err := signer.Sign(ctx, "policy-key", 1, []byte("m")); err != nil {
		t.Fatalf("signer token signs: %v", err)
	}
	sigs, err := signer.SignBatch(ctx, "policy-key", 1, [][]byte{[]byte("a"), []byte("b")})
	if err != nil || len(sigs) != 2 {
		t.Fatalf("signer token batch-signs: %v", err)
	}
	if _, err := signer.Rotate(ctx, "policy-key"); !errors.Is(err, keys.ErrUnavailable) || !strings.Contains(err.Error(), "policy") {
		t.Fatalf("signer token rotates: %v, want a refusal naming the policy", err)
	}
	if _, err := signer.Create(ctx, "policy-key-2", keys.ECDSAP256); err == nil {
		t.Fatal("signer token created a key")
	}
	raw, err := api.NewClient(&api.Config{Address: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	raw.SetToken(tok)
	for _, c := range []struct {
		method, path string
		body         map[string]any
	}{
		{"GET", "transit/export/signing-key/policy-key", nil},
		{"GET", "transit/backup/policy-key", nil},
		{"POST", "transit/keys/policy-key/config", map[string]any{"exportable": true}},
		{"POST", "transit/keys/policy-key/config", map[string]any{"deletion_allowed": true}},
		{"DELETE", "transit/keys/policy-key", nil},
		{"POST", "transit/keys/policy-key/trim", map[string]any{"min_available_version": 1}},
		{"POST", "transit/encrypt/policy-key", map[string]any{"plaintext": "aGk="}},
	} {
		var err error
		switch c.method {
		case "GET":
			_, err = raw.Logical().ReadWithContext(ctx, c.path)
		case "DELETE":
			_, err = raw.Logical().DeleteWithContext(ctx, c.path)
		default:
			_, err = raw.Logical().WriteWithContext(ctx, c.path, c.body)
		}
		var re *api.ResponseError
		if !errors.As(err, &re) || re.StatusCode != 403 {
			t.Errorf("%s %s with the signer token: %v, want 403", c.method, c.path, err)
		}
	}
	// And the key itself is not exportable even for root.
	if _, err := srv.Root.Logical().ReadWithContext(ctx, "transit/export/signing-key/policy-key"); err == nil {
		t.Error("the key can be exported")
	}
}

// Sealed Vault fails closed with a message naming the cause; unsealing
// brings the same back end back without a restart.
func TestSealedThenUnsealed(t *testing.T) {
	requireVault(t)
	ctx := t.Context()
	b := open(t, srv.RootToken)
	if _, err := b.Create(ctx, "seal-key", keys.Ed25519); err != nil {
		t.Fatal(err)
	}
	if err := srv.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	unsealed := false
	t.Cleanup(func() {
		if !unsealed {
			srv.Unseal(context.Background())
		}
	})
	_, err := b.Sign(ctx, "seal-key", 1, []byte("m"))
	if !errors.Is(err, keys.ErrUnavailable) || !strings.Contains(err.Error(), "sealed") {
		t.Fatalf("sign while sealed: %v, want ErrUnavailable saying sealed", err)
	}
	if _, err := b.Versions(ctx, "seal-key"); !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("versions while sealed: %v, want ErrUnavailable", err)
	}
	if err := srv.Unseal(ctx); err != nil {
		t.Fatal(err)
	}
	unsealed = true
	if _, err := b.Sign(ctx, "seal-key", 1, []byte("m")); err != nil {
		t.Fatalf("sign after unseal: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	b, err := vault.Open(vault.Config{Address: "http://" + addr, Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Sign(t.Context(), "k", 1, []byte("m"))
	if !errors.Is(err, keys.ErrUnavailable) || !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("sign with Vault down: %v, want ErrUnavailable naming the address", err)
	}
}

// A refused token is re-read from its file: an agent renewing the token
// into the file keeps the signer working.
func TestTokenFileReload(t *testing.T) {
	requireVault(t)
	ctx := t.Context()
	admin := open(t, srv.RootToken)
	if _, err := admin.Create(ctx, "reload-key", keys.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("hvs.not-a-real-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := vault.Open(vault.Config{Address: srv.Addr, TokenFile: file})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Sign(ctx, "reload-key", 1, []byte("m"))
	if !errors.Is(err, keys.ErrUnavailable) || !strings.Contains(err.Error(), "token") || strings.Contains(err.Error(), "not-a-real-token") {
		t.Fatalf("sign with a bad token: %v, want ErrUnavailable about the token, without the token", err)
	}
	tok, err := srv.SignerToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Sign(ctx, "reload-key", 1, []byte("m")); err != nil {
		t.Fatalf("sign after the token file was renewed: %v", err)
	}
}

func TestRefusesExportableKeys(t *testing.T) {
	requireVault(t)
	ctx := t.Context()
	if _, err := srv.Root.Logical().WriteWithContext(ctx, "transit/keys/exportable-key", map[string]any{"type": "ecdsa-p256", "exportable": true}); err != nil {
		t.Fatal(err)
	}
	b := open(t, srv.RootToken)
	if _, err := b.Versions(ctx, "exportable-key"); !errors.Is(err, keys.ErrInvalid) || !strings.Contains(err.Error(), "exportable") {
		t.Fatalf("versions of an exportable key: %v, want a refusal", err)
	}
}
