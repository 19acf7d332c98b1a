package lifecycle

import (
	"crypto"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/custody-dev/custody/services/signer/internal/keys/pkcs11"
	"github.com/custody-dev/custody/services/signer/internal/keys/pkcs11/softhsmtest"
)

// TestPKCS11RotateRevoke runs rotation and revocation on a
// real SoftHSM2 token, where the signer's login may generate keys.
func TestPKCS11RotateRevoke(t *testing.T) {
	tok, err := softhsmtest.New("custody-lifecycle")
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
	ctx := t.Context()
	for _, n := range []string{"artifact", "decision"} {
		if _, err := backend.Create(ctx, n, keys.ECDSAP256); err != nil {
			t.Fatal(err)
		}
	}
	f := newFixture(t, true)
	f.clock.t = time.Now().UTC()
	m, err := Open(Config{Backend: backend, ArtifactKey: "artifact", DecisionKey: "decision", Dir: t.TempDir(), Audit: f.audit, Now: f.clock.now,
		DevRootKeys: []crypto.Signer{f.root}, DevThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.EnsureRoot(ctx); err != nil {
		t.Fatal(err)
	}
	v1, err := m.Current(ctx, "artifact")
	if err != nil {
		t.Fatal(err)
	}
	in, rv, err := m.Rotate(ctx, "artifact", "admin")
	if err != nil || in.Version.Version != 2 || rv != 2 || in.Status != StatusCurrent {
		t.Fatalf("Rotate = v%d %s root %d, %v", in.Version.Version, in.Status, rv, err)
	}
	if _, _, err := m.Revoke(ctx, "artifact", 1, time.Time{}, "drill", "admin"); err != nil {
		t.Fatal(err)
	}
	f.clock.add(currentTTL)
	if v, err := m.Current(ctx, "artifact"); err != nil || v.Version != 2 || v.ID == v1.ID {
		t.Fatalf("current after the drill: v%d %v", v.Version, err)
	}
}
