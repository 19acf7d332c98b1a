package lifecycle

import (
	"context"
	"crypto"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/custody-dev/custody/services/signer/internal/keys/pkcs11"
	"github.com/custody-dev/custody/services/signer/internal/keys/pkcs11/softhsmtest"
	"github.com/custody-dev/custody/services/signer/internal/keys/vault"
	"github.com/custody-dev/custody/services/signer/internal/keys/vault/vaulttest"
)

// checkBackupKey publishes a root with a backup key on backend b and signs
// a backup statement with it: the root lists it with purpose backup and no
// channels, and the envelope verifies as a backup signature only.
func checkBackupKey(t *testing.T, b keys.Backend) {
	t.Helper()
	ctx := t.Context()
	f := newFixture(t, true)
	f.clock.t = time.Now().UTC()
	m, err := Open(Config{Backend: b, ArtifactKey: "artifact", DecisionKey: "decision", BackupKey: "backup", Dir: t.TempDir(), Audit: f.audit, Now: f.clock.now,
		DevRootKeys: []crypto.Signer{f.root}, DevThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.EnsureRoot(ctx); err != nil {
		t.Fatal(err)
	}
	roots := m.Roots(0)
	root, err := trustroot.Parse(roots[len(roots)-1])
	if err != nil {
		t.Fatal(err)
	}
	cur, err := m.Current(ctx, m.BackupKey())
	if err != nil {
		t.Fatal(err)
	}
	sk, ok := root.SigningKey(cur.ID)
	if !ok || sk.Purpose != attest.PurposeBackup || len(sk.Channels) != 0 {
		t.Fatalf("root lists the backup key as %+v (%v)", sk, ok)
	}
	st, err := attest.BackupStatement(attest.Backup{ManifestDigest: "sha256:1111111111111111111111111111111111111111111111111111111111111111",
		Created: time.Now(), LogOrigin: "o", Files: 1})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := attest.SignEnvelope(attest.PayloadType, st, cur.ID, func(pae []byte) ([]byte, error) {
		return b.Sign(context.Background(), "backup", cur.Version, pae)
	})
	if err != nil {
		t.Fatal(err)
	}
	env, err := attest.ParseEnvelope(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Verify(root.Keys(attest.PurposeBackup), attest.PurposeBackup); err != nil {
		t.Errorf("backup envelope: %v", err)
	}
	if _, err := env.Verify(root.Keys(attest.PurposeArtifact), attest.PurposeArtifact); err == nil {
		t.Error("a backup envelope verifies as an artifact signature")
	}
}

func TestBackupKeySoft(t *testing.T) {
	f := newFixture(t, true)
	if _, err := f.store.Create(t.Context(), "backup", keys.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	checkBackupKey(t, f.store)
}

func TestBackupKeyPKCS11(t *testing.T) {
	tok, err := softhsmtest.New("custody-backup")
	if errors.Is(err, softhsmtest.ErrMissing) && os.Getenv(softhsmtest.RequireEnv) == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	backend, err := pkcs11.Open(pkcs11.Config{ModulePath: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	for _, n := range []string{"artifact", "decision", "backup"} {
		if _, err := backend.Create(t.Context(), n, keys.ECDSAP256); err != nil {
			t.Fatal(err)
		}
	}
	checkBackupKey(t, backend)
}

func TestBackupKeyVault(t *testing.T) {
	srv, err := vaulttest.Start()
	if errors.Is(err, vaulttest.ErrNoVault) && os.Getenv(vaulttest.RequireEnv) == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	custodian, err := vault.Open(vault.Config{Address: srv.Addr, Token: srv.RootToken})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"artifact", "decision", "backup"} {
		if _, err := custodian.Create(t.Context(), n, keys.ECDSAP256); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := srv.SignerToken(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	backend, err := vault.Open(vault.Config{Address: srv.Addr, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	checkBackupKey(t, backend)
}
