package devstack

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/identity"
)

func TestMintLayoutAndReuse(t *testing.T) {
	l := Layout{Dir: t.TempDir()}
	if err := Mint(l); err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString(TrustDomain)
	for name, path := range Identities {
		src, err := identity.OpenFiles(l.IdentityDir(name), td, nil)
		if err != nil {
			t.Fatalf("identity %s: %v", name, err)
		}
		svid, _ := src.GetX509SVID()
		if want := spiffeid.RequireFromPath(td, path); svid.ID != want {
			t.Errorf("identity %s has %s, want %s", name, svid.ID, want)
		}
	}
	for _, s := range Services {
		src, err := identity.OpenFiles(l.SVIDDir(s.Name), td, nil)
		if err != nil {
			t.Fatalf("service %s: %v", s.Name, err)
		}
		svid, _ := src.GetX509SVID()
		if svid.ID != ServerID(td, s.Name) {
			t.Errorf("service %s has %s, want %s", s.Name, svid.ID, ServerID(td, s.Name))
		}
		if dns := svid.Certificates[0].DNSNames; len(dns) != 1 || dns[0] != s.Name {
			t.Errorf("service %s SVID DNS names %v, want [%s] for grpcurl -authority", s.Name, dns, s.Name)
		}
		if time.Until(svid.Certificates[0].NotAfter) < 24*time.Hour {
			t.Errorf("service %s SVID expires too soon", s.Name)
		}
	}
	for _, secret := range []string{"ca/ca_key.pem", "keys/log.key", "keys/token.pem", "keys/keystore.pass", "web/edge_key.pem", "svid/signer/svid_key.pem"} {
		fi, err := os.Stat(filepath.Join(l.Dir, secret))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is readable by others: %v", secret, fi.Mode().Perm())
		}
	}

	// A second mint keeps the CA and keys, so state survives restarts.
	keep := map[string][]byte{}
	for _, f := range []string{"ca/ca.pem", "keys/log.key", "keys/token.pem", "keys/keystore.pass"} {
		keep[f], _ = os.ReadFile(filepath.Join(l.Dir, f))
	}
	if err := Mint(l); err != nil {
		t.Fatal(err)
	}
	for f, before := range keep {
		after, _ := os.ReadFile(filepath.Join(l.Dir, f))
		if !bytes.Equal(before, after) {
			t.Errorf("%s changed on restart", f)
		}
	}
}

func TestDownWithoutStack(t *testing.T) {
	if err := Down(Layout{Dir: t.TempDir()}); err == nil {
		t.Fatal("dev down with no stack: want an error")
	}
}
