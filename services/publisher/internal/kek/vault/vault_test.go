package vault_test

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custody-dev/custody/services/publisher/internal/blobstore/local"
	"github.com/custody-dev/custody/services/publisher/internal/kek"
	"github.com/custody-dev/custody/services/publisher/internal/kek/kektest"
	"github.com/custody-dev/custody/services/publisher/internal/kek/vault"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
)

func TestConformance(t *testing.T) {
	s := startVault(t)
	n := 0
	kektest.Run(t, func(t *testing.T) kektest.Backend {
		// A key of its own per subtest, so a retired version in one
		// does not affect the next; the policy is widened to it.
		n++
		key := "publisher"
		if n > 1 {
			key = "publisher-" + string(rune('a'+n))
			s.must(t, "POST", "custody-kek/keys/"+key, map[string]any{"type": "aes256-gcm96"})
			s.must(t, "PUT", "sys/policies/acl/kek-"+key, map[string]any{"policy": strings.ReplaceAll(`
path "custody-kek/encrypt/K" { capabilities = ["update"] }
path "custody-kek/decrypt/K" { capabilities = ["update"] }
path "custody-kek/rewrap/K" { capabilities = ["update"] }`, "K", key)})
		}
		auth := s.must(t, "POST", "auth/token/create", map[string]any{"policies": []string{"custody-publisher-kek", "kek-" + key}, "no_default_policy": true, "ttl": "1h"})
		tok := filepath.Join(t.TempDir(), "token")
		writeFile(t, tok, auth["client_token"].(string))
		k, err := vault.New(vault.Config{Addr: s.addr, TokenFile: tok, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		return kektest.Backend{
			KEK:    k,
			Rotate: func(t *testing.T) { s.must(t, "POST", "custody-kek/keys/"+key+"/rotate", nil) },
			Retire: func(t *testing.T) {
				d := s.must(t, "GET", "custody-kek/keys/"+key, nil)
				s.must(t, "POST", "custody-kek/keys/"+key+"/config", map[string]any{"min_decryption_version": d["latest_version"]})
			},
		}
	})
}

// The publisher's token may wrap and unwrap but not touch the key itself.
func TestPolicyGrantsOnlyWrapping(t *testing.T) {
	s := startVault(t)
	tok := s.publisherToken(t)
	k, err := vault.New(vault.Config{Addr: s.addr, TokenFile: tok})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Wrap(t.Context(), make([]byte, 32)); err != nil {
		t.Fatalf("Wrap with the publisher policy: %v", err)
	}
	token := strings.TrimSpace(readFile(t, tok))
	for _, p := range []struct{ method, path string }{
		{"POST", "custody-kek/keys/publisher/rotate"},
		{"POST", "custody-kek/keys/publisher/config"},
		{"GET", "custody-kek/export/encryption-key/publisher"},
		{"GET", "custody-kek/backup/publisher"},
		{"GET", "custody-kek/keys/publisher"},
		{"POST", "transit/sign/anything"},
	} {
		if _, err := s.callAs(token, p.method, p.path, map[string]any{}); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("%s %s with the publisher token: %v, want 403", p.method, p.path, err)
		}
	}
}

// Vault sealed or gone: uploads and downloads fail closed with
// Unavailable naming Vault, and work again once it is back, without a
// restart.
func TestVaultDownFailsClosedAndResumes(t *testing.T) {
	s := startVault(t)
	k, err := vault.New(vault.Config{Addr: s.addr, TokenFile: s.publisherToken(t)})
	if err != nil {
		t.Fatal(err)
	}
	objects, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := sealed.New(objects, k, slog.New(slog.DiscardHandler))
	data := bytes.Repeat([]byte("artifact"), 100000)
	d, _, err := store.Put(t.Context(), bytes.NewReader(data), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	s.seal(t)
	if _, _, err := store.Put(t.Context(), bytes.NewReader([]byte("new")), 1<<30); !errors.Is(err, sealed.ErrUnavailable) || !strings.Contains(err.Error(), "vault") {
		t.Fatalf("Put with Vault sealed: %v; want ErrUnavailable naming vault", err)
	}
	if _, _, err := store.Open(t.Context(), d, 0); !errors.Is(err, sealed.ErrUnavailable) || !strings.Contains(err.Error(), "vault") {
		t.Fatalf("Open with Vault sealed: %v; want ErrUnavailable naming vault", err)
	}
	s.unseal(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, _, err := store.Open(t.Context(), d, 0)
		if err == nil {
			r.Close()
			break
		}
		if !errors.Is(err, sealed.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Open after unseal: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, _, err := store.Put(t.Context(), bytes.NewReader([]byte("after")), 1<<30); err != nil {
		t.Fatalf("Put after unseal: %v", err)
	}
	s.stop()
	if _, _, err := store.Open(t.Context(), d, 0); !errors.Is(err, sealed.ErrUnavailable) || !strings.Contains(err.Error(), "vault") {
		t.Fatalf("Open with Vault stopped: %v; want ErrUnavailable naming vault", err)
	}
	if _, err := k.Wrap(t.Context(), make([]byte, 32)); !errors.Is(err, kek.ErrUnavailable) {
		t.Fatalf("Wrap with Vault stopped: %v; want kek.ErrUnavailable", err)
	}
}
