package lifecycle

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/custody-dev/custody/services/signer/internal/keys/vault"
	"github.com/custody-dev/custody/services/signer/internal/keys/vault/vaulttest"
)

// TestVaultCustodianRotation runs the production rotation with a real Vault:
// the signer's token cannot rotate and says who can; the custodian rotates;
// the signer lists the new version as pending and keeps signing with the
// old one until the ceremony publishes a root that lists it.
func TestVaultCustodianRotation(t *testing.T) {
	srv, err := vaulttest.Start()
	if errors.Is(err, vaulttest.ErrNoVault) && os.Getenv(vaulttest.RequireEnv) == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	ctx := t.Context()
	custodian, err := vault.Open(vault.Config{Address: srv.Addr, Token: srv.RootToken})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"artifact", "decision"} {
		if _, err := custodian.Create(ctx, n, keys.ECDSAP256); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := srv.SignerToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	backend, err := vault.Open(vault.Config{Address: srv.Addr, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, false)
	f.store = nil
	c := f.clock
	c.t = time.Now().UTC() // Vault stamps versions with the real time
	m, err := Open(Config{Backend: backend, ArtifactKey: "artifact", DecisionKey: "decision", Dir: t.TempDir(), Audit: f.audit, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	f.publish()

	if _, _, err := m.Rotate(ctx, "artifact", "admin"); !errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "transit/keys/artifact/rotate") {
		t.Fatalf("Rotate with the signer's token = %v, want a precondition naming the custodian's command", err)
	}
	if _, err := custodian.Rotate(ctx, "artifact"); err != nil {
		t.Fatal(err)
	}
	c.add(currentTTL + time.Second)
	infos, err := m.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var statuses []string
	for _, in := range infos {
		if in.Name == "artifact" {
			statuses = append(statuses, in.Status)
		}
	}
	if strings.Join(statuses, ",") != StatusCurrent+","+StatusPending {
		t.Fatalf("after the custodian's rotation: %v, want current,pending", statuses)
	}
	if v, err := m.Current(ctx, "artifact"); err != nil || v.Version != 1 {
		t.Fatalf("signing version %d (%v) before the root lists version 2", v.Version, err)
	}
	if v := f.publish(); v != 2 {
		t.Fatalf("root version %d", v)
	}
	if v, err := m.Current(ctx, "artifact"); err != nil || v.Version != 2 {
		t.Fatalf("signing version %d (%v) after the root lists version 2", v.Version, err)
	}
	r, _ := trustroot.Parse(m.Roots(0)[0])
	if sk, ok := r.SigningKey(infos[0].ID); !ok || sk.Status != trustroot.StatusRetired || sk.ValidUntil == nil {
		t.Fatalf("root 2 lists version 1 as %+v, want retired with a window end", sk)
	}
}
