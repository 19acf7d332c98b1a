// Package identitytest gives tests a trust domain whose SVIDs live in memory.
package identitytest

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/identity/devca"
)

// TrustDomain is a test trust domain with its own CA.
type TrustDomain struct {
	TD spiffeid.TrustDomain
	CA *devca.CA
}

// New returns a fresh trust domain named name (e.g. "custody.test").
func New(t testing.TB, name string) *TrustDomain {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(name)
	ca, err := devca.NewSPIFFE(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &TrustDomain{TD: td, CA: ca}
}

// ID returns spiffe://<td><path>.
func (d *TrustDomain) ID(path string) spiffeid.ID {
	return spiffeid.RequireFromPath(d.TD, path)
}

// Source mints an SVID for path (e.g. "/service/signer") and returns a
// Source serving it with this trust domain's bundle.
func (d *TrustDomain) Source(t testing.TB, path string) identity.Source {
	t.Helper()
	issued, err := d.CA.IssueSVID(d.ID(path), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := x509svid.Parse(issued.CertPEM, issued.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &Static{SVID: svid, Bundle: x509bundle.FromX509Authorities(d.TD, []*x509.Certificate{d.CA.Cert})}
}

// Static is a Source that never rotates.
type Static struct {
	SVID   *x509svid.SVID
	Bundle *x509bundle.Bundle
}

var _ identity.Source = (*Static)(nil)

// GetX509SVID returns the SVID.
func (s *Static) GetX509SVID() (*x509svid.SVID, error) { return s.SVID, nil }

// GetX509BundleForTrustDomain returns the bundle if td is its trust domain.
func (s *Static) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.Bundle.GetX509BundleForTrustDomain(td)
}

// Close does nothing.
func (s *Static) Close() error { return nil }
