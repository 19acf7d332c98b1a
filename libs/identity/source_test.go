package identity

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/identity/devca"
)

func writeSVID(t *testing.T, dir string, ca *devca.CA, id spiffeid.ID) {
	t.Helper()
	issued, err := ca.IssueSVID(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{SVIDFile: issued.CertPEM, SVIDKeyFile: issued.KeyPEM, BundleFile: ca.CertPEM()} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFilesReloadsRotatedSVID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("custody.test")
	ca, err := devca.NewSPIFFE(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	first := spiffeid.RequireFromPath(td, "/service/a")
	writeSVID(t, dir, ca, first)
	src, err := OpenFiles(dir, td, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	src.now = func() time.Time { return now }

	svid, _ := src.GetX509SVID()
	if svid.ID != first {
		t.Fatalf("ID = %s, want %s", svid.ID, first)
	}
	// Rotate: a new SVID with a later modification time.
	second := spiffeid.RequireFromPath(td, "/service/b")
	writeSVID(t, dir, ca, second)
	later := now.Add(2 * time.Second)
	for _, name := range []string{SVIDFile, SVIDKeyFile, BundleFile} {
		if err := os.Chtimes(filepath.Join(dir, name), later, later); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(reloadInterval)
	svid, _ = src.GetX509SVID()
	if svid.ID != second {
		t.Fatalf("after rotation ID = %s, want %s", svid.ID, second)
	}
	// A half-written file keeps the last good SVID.
	if err := os.WriteFile(filepath.Join(dir, SVIDFile), []byte("-----BEGIN CERT"), 0o600); err != nil {
		t.Fatal(err)
	}
	now = now.Add(reloadInterval)
	svid, _ = src.GetX509SVID()
	if svid.ID != second {
		t.Fatalf("after a broken rewrite ID = %s, want the last good %s", svid.ID, second)
	}
	if _, err := src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("other.test")); err == nil {
		t.Fatal("bundle for a foreign trust domain: want an error")
	}
}

func TestOpenNeedsASource(t *testing.T) {
	if _, err := Open(t.Context(), Config{}); err == nil {
		t.Fatal("Open with neither Workload API nor directory: want an error")
	}
	if _, err := OpenFiles(t.TempDir(), spiffeid.RequireTrustDomainFromString("custody.test"), nil); err == nil {
		t.Fatal("OpenFiles on an empty directory: want an error")
	}
}
