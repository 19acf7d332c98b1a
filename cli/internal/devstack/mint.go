// Package devstack runs Custody's development stack: it mints a trust domain
// and keys into a directory and supervises every service as its own process.
package devstack

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/daemon"
	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/identity/devca"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
)

// TrustDomain is the dev stack's trust domain.
const TrustDomain = "custody.local"

// Identities maps the names accepted by --as to their SPIFFE ID paths.
var Identities = map[string]string{
	"builder":  "/builder/ci",
	"builder2": "/builder/ci2", // a second pipeline: the same bytes may come from two builders
	"alice":    "/approver/alice",
	"bob":      "/approver/bob",
	"carol":    "/approver/carol",
	"deployer": "/deployer/pipeline",
	"admin":    "/admin/ops",
	"auditor":  "/auditor/audit",
	"security": "/security/osv", // imports advisories
}

// Service is one process of the stack.
type Service struct {
	Name string
	// IDPath is the SPIFFE ID path of the service's SVID.
	IDPath string
}

// Services in start order: each only calls services before it.
var Services = []Service{
	{"signer", "/service/signer"},
	{"catalog", "/service/catalog"},
	{"publisher", "/service/publisher"},
	{"gatekeeper", "/service/gatekeeper"},
	{"edge", "/edge/dev"},
	{"edge2", "/edge/dev2"},
	{"cdn-broker", "/service/cdn-broker"},
}

// Edges are the stack's edge services and the edge names they run with
// (--name, and the last element of their SPIFFE ID /edge/<name>). Each has
// its own cache directory (DataDir) and HTTPS port; the broker issues one
// URL per edge, in this order, so that `custody fetch` can fail over.
var Edges = map[string]string{"edge": "dev", "edge2": "dev2"}

// EdgeServices lists the edge services in the broker's URL order.
var EdgeServices = []string{"edge", "edge2"}

// Binary is the executable a service runs: every edge runs the edge binary.
func Binary(service string) string {
	if _, ok := Edges[service]; ok {
		return "edge"
	}
	return service
}

// Layout names the files of a dev directory (see docs/services.md).
type Layout struct {
	Dir string
	// HSM keeps the signer's keys and the publisher's KEK in a SoftHSM2
	// token under keys/softhsm (custody dev up --hsm) instead of the
	// software keystore and the soft KEK.
	HSM bool
	// PolicyBundle, if set, is the gatekeeper's --policy-bundle (custody
	// dev up --policy-bundle): a directory or .tar.gz; empty, the built-in
	// policy. DryRunEnv is its --dry-run-env (custody dev up
	// --dry-run-env staging).
	PolicyBundle string
	DryRunEnv    string
	// UploadProgressTimeout, when set, is the publisher's
	// --upload-progress-timeout (custody dev up --upload-progress-timeout):
	// short, stalled uploads are cut within seconds (a test of the limit).
	UploadProgressTimeout time.Duration
	// ExtraEdgeURLs (custody dev up --extra-edge-url) are edge base URLs
	// that the broker lists before the stack's own edges: an edge the
	// stack does not run, such as a test's misbehaving HTTPS server in
	// front of the two real ones. The stack neither starts nor checks them.
	ExtraEdgeURLs []string
	// CosignRefresh, MaxCheckpointAge and LogHeadRefresh, when set, are
	// the catalog's --cosign-refresh and the gatekeeper's
	// --max-checkpoint-age and --log-head-refresh (custody dev up flags of
	// the same names): short, a frozen log is denied within seconds (a
	// test of ATTACKS.md #14).
	CosignRefresh, MaxCheckpointAge, LogHeadRefresh time.Duration
	// CatalogSignerAddr, when set, is the address the catalog reaches the
	// signer at (custody dev up --catalog-signer-addr): a proxy in front
	// of the signer that a test can cut, freezing the log while the signer
	// serves everyone else.
	CatalogSignerAddr string
}

func (l Layout) path(elem ...string) string {
	return filepath.Join(append([]string{l.Dir}, elem...)...)
}

// RetentionPolicy is the publisher's retention policy, if the file exists
// when the stack starts (see docs/services.md).
func (l Layout) RetentionPolicy() string { return l.path("retention.json") }

// StackFile is written once every service is healthy.
func (l Layout) StackFile() string { return l.path("stack.json") }

// TrustRoot is the pinned trust root: the first version the dev signer
// published, written once. Verifiers walk forward from it.
func (l Layout) TrustRoot() string { return l.path("trust", "root.json") }

// RootKeys are the development trust-root private keys; in production they
// stay offline (custody trustroot keygen).
func (l Layout) RootKeys() []string {
	return []string{l.path("keys", "root-1.key"), l.path("keys", "root-2.key")}
}

// RootThreshold is how many of RootKeys sign each dev trust root.
const RootThreshold = 2

// LogOrigin is the dev log's checkpoint origin.
const LogOrigin = TrustDomain + "/log"

// CosignerName is the key name of the dev signer's cosignatures on the
// log's checkpoints.
const CosignerName = TrustDomain + "/signer"

// IdentityDir holds the SVID of a dev identity (--as name).
func (l Layout) IdentityDir(name string) string { return l.path("identities", name) }

// SVIDDir holds a service's SVID.
func (l Layout) SVIDDir(service string) string { return l.path("svid", service) }

// WebCA is the CA of the edge's HTTPS certificate.
func (l Layout) WebCA() string { return l.path("web", "ca.pem") }

// LogVerifierKey is the note verifier key of the log's checkpoints.
func (l Layout) LogVerifierKey() string { return l.path("keys", "log.vkey") }

// DataDir is a service's state directory.
func (l Layout) DataDir(service string) string { return l.path("data", service) }

// LogFile is a service's log.
func (l Layout) LogFile(service string) string { return l.path("logs", service+".log") }

// EndpointsFile is where a service writes its bound addresses.
func (l Layout) EndpointsFile(service string) string { return l.path("run", service+".json") }

// TraceFile receives a service's spans.
func (l Layout) TraceFile(service string) string { return l.path("traces", service+".jsonl") }

// Mint creates what the stack needs in the directory. The CA and keys are
// made once and reused, so state survives restarts; SVIDs and the edge's
// certificate are issued afresh each time.
func Mint(l Layout) error {
	for _, d := range []string{"ca", "svid", "identities", "web", "keys", "data", "logs", "run", "traces", "trust"} {
		if err := os.MkdirAll(l.path(d), 0o700); err != nil {
			return err
		}
	}
	td := spiffeid.RequireTrustDomainFromString(TrustDomain)
	ca, err := loadOrCreateCA(l.path("ca", "ca.pem"), l.path("ca", "ca_key.pem"), func() (*devca.CA, error) {
		return devca.NewSPIFFE(td, 90*24*time.Hour)
	}, td)
	if err != nil {
		return fmt.Errorf("SPIFFE CA: %w", err)
	}
	for _, s := range Services {
		if err := writeSVID(ca, l.SVIDDir(s.Name), spiffeid.RequireFromPath(td, s.IDPath), s.Name); err != nil {
			return err
		}
	}
	for name, path := range Identities {
		if err := writeSVID(ca, l.IdentityDir(name), spiffeid.RequireFromPath(td, path)); err != nil {
			return err
		}
	}
	web, err := loadOrCreateCA(l.WebCA(), l.path("web", "ca_key.pem"), func() (*devca.CA, error) {
		return devca.NewHTTPS("Custody dev HTTPS CA", 90*24*time.Hour)
	}, spiffeid.TrustDomain{})
	if err != nil {
		return fmt.Errorf("HTTPS CA: %w", err)
	}
	cert, err := web.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, 30*24*time.Hour)
	if err != nil {
		return err
	}
	if err := writeFiles(map[string][]byte{l.path("web", "edge.pem"): cert.CertPEM, l.path("web", "edge_key.pem"): cert.KeyPEM}); err != nil {
		return err
	}
	// The catalog serves its log over HTTPS with a certificate of its own.
	logCert, err := web.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, 30*24*time.Hour)
	if err != nil {
		return err
	}
	if err := writeFiles(map[string][]byte{l.path("web", "catalog.pem"): logCert.CertPEM, l.path("web", "catalog_key.pem"): logCert.KeyPEM}); err != nil {
		return err
	}
	if err := once(l.path("keys", "log.key"), func() error {
		sk, vk, err := tlog.GenerateKey(LogOrigin)
		if err != nil {
			return err
		}
		return writeFiles(map[string][]byte{l.path("keys", "log.key"): []byte(sk), l.LogVerifierKey(): []byte(vk)})
	}); err != nil {
		return fmt.Errorf("log key: %w", err)
	}
	for _, path := range l.RootKeys() {
		if err := once(path, func() error {
			k, err := trustroot.GenerateKey(attest.AlgEd25519)
			if err != nil {
				return err
			}
			b, err := trustroot.MarshalPrivateKey(k)
			if err != nil {
				return err
			}
			return writeFiles(map[string][]byte{path: b})
		}); err != nil {
			return fmt.Errorf("trust-root key: %w", err)
		}
	}
	if err := once(l.path("keys", "token.pem"), func() error { return writeTokenKeys(l) }); err != nil {
		return fmt.Errorf("edge token key: %w", err)
	}
	return once(l.path("keys", "keystore.pass"), func() error {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		return writeFiles(map[string][]byte{l.path("keys", "keystore.pass"): []byte(hex.EncodeToString(b))})
	})
}

func loadOrCreateCA(certPath, keyPath string, create func() (*devca.CA, error), td spiffeid.TrustDomain) (*devca.CA, error) {
	certPEM, err1 := os.ReadFile(certPath)
	keyPEM, err2 := os.ReadFile(keyPath)
	if err1 == nil && err2 == nil {
		return devca.Load(certPEM, keyPEM, td)
	}
	ca, err := create()
	if err != nil {
		return nil, err
	}
	key, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	return ca, writeFiles(map[string][]byte{certPath: ca.CertPEM(), keyPath: key})
}

// writeSVID mints an SVID for id into dir; a service's SVID also carries
// its name as a DNS SAN for grpcurl -authority.
func writeSVID(ca *devca.CA, dir string, id spiffeid.ID, dnsNames ...string) error {
	issued, err := ca.IssueSVID(id, 7*24*time.Hour, dnsNames...)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return writeFiles(map[string][]byte{
		filepath.Join(dir, identity.SVIDFile):    issued.CertPEM,
		filepath.Join(dir, identity.SVIDKeyFile): issued.KeyPEM,
		filepath.Join(dir, identity.BundleFile):  ca.CertPEM(),
	})
}

func writeTokenKeys(l Layout) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	return writeFiles(map[string][]byte{
		l.path("keys", "token.pem"):     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}),
		l.path("keys", "token.pub.pem"): pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}),
	})
}

// once runs create unless path exists.
func once(path string, create func() error) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return create()
}

func writeFiles(files map[string][]byte) error {
	for path, b := range files {
		if err := daemon.WriteFileAtomic(path, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
