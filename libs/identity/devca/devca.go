// Package devca is a development certificate authority: it mints a SPIFFE
// trust domain's X.509-SVIDs and HTTPS server certificates for `custody dev`
// and tests. It is not for production, where SPIRE issues SVIDs.
package devca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// CA is a self-signed certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// TrustDomain is set for SPIFFE CAs and empty for HTTPS CAs.
	TrustDomain spiffeid.TrustDomain
	now         func() time.Time
}

// Issued is a certificate chain and its private key, PEM encoded.
type Issued struct {
	CertPEM []byte
	// KeyPEM is PKCS#8, as go-spiffe requires.
	KeyPEM []byte
}

// NewSPIFFE returns a new CA for the trust domain td, valid for validity.
func NewSPIFFE(td spiffeid.TrustDomain, validity time.Duration) (*CA, error) {
	uri := td.ID().URL()
	ca, err := newCA(pkix.Name{Organization: []string{"Custody dev"}, CommonName: "Custody dev SPIFFE CA " + td.Name()}, []*url.URL{uri}, validity)
	if err != nil {
		return nil, err
	}
	ca.TrustDomain = td
	return ca, nil
}

// NewHTTPS returns a new CA for HTTPS server certificates.
func NewHTTPS(name string, validity time.Duration) (*CA, error) {
	return newCA(pkix.Name{Organization: []string{"Custody dev"}, CommonName: name}, nil, validity)
}

func newCA(subject pkix.Name, uris []*url.URL, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               subject,
		URIs:                  uris,
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, now: time.Now}, nil
}

// Load reads a CA written with CertPEM and KeyPEM.
func Load(certPEM, keyPEM []byte, td spiffeid.TrustDomain) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("load CA: want PEM certificate and key")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load CA key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("load CA key: not a signing key")
	}
	return &CA{Cert: cert, Key: signer, TrustDomain: td, now: time.Now}, nil
}

// CertPEM returns the CA certificate, which is also the trust bundle.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// KeyPEM returns the CA's private key as PKCS#8 PEM.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// IssueSVID mints an X.509-SVID for id, valid for ttl. id must be in the
// CA's trust domain. dnsNames, if any, are added as DNS SANs (as SPIRE does
// for entries with DNS names) so that tools that check host names, such as
// grpcurl with -authority, can verify a server.
func (ca *CA) IssueSVID(id spiffeid.ID, ttl time.Duration, dnsNames ...string) (*Issued, error) {
	if ca.TrustDomain.IsZero() {
		return nil, errors.New("issue SVID: not a SPIFFE CA")
	}
	if id.TrustDomain() != ca.TrustDomain {
		return nil, fmt.Errorf("issue SVID for %s: CA is for trust domain %s", id, ca.TrustDomain)
	}
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"Custody dev"}},
		URIs:        []*url.URL{id.URL()},
		DNSNames:    dnsNames,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ttl)
}

// IssueServer mints an HTTPS server certificate for the given host names and
// IP addresses, valid for ttl.
func (ca *CA) IssueServer(dnsNames []string, ips []net.IP, ttl time.Duration) (*Issued, error) {
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"Custody dev"}, CommonName: firstOr(dnsNames, "custody")},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ttl)
}

func (ca *CA) issue(tmpl *x509.Certificate, ttl time.Duration) (*Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := ca.now()
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = now.Add(-time.Minute)
	tmpl.NotAfter = now.Add(ttl)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Issued{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}
