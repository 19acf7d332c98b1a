// Package conn resolves how the CLI reaches Custody: which identity it acts
// as, where each service listens, and which keys and CAs it trusts.
package conn

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/trustroot"

	"github.com/custody-dev/custody/cli/internal/devstack"
)

// Options are the CLI's global connection flags.
type Options struct {
	DevDir      string
	As          string
	SVIDDir     string
	TrustDomain string
	// TrustRootFile is the pinned trust root; empty means the dev
	// stack's.
	TrustRootFile string
	WebCAFile     string
	// Addrs maps service names to addresses given on the command line.
	Addrs map[string]string
	// Telemetry traces the CLI's calls; nil records no spans (trace
	// context is still passed on).
	Telemetry *telemetry.Telemetry
}

// Env is a resolved connection environment.
type Env struct {
	Source identity.Source
	TD     spiffeid.TrustDomain
	opts   Options
	stack  *devstack.Stack
	tel    *telemetry.Telemetry
}

// Open resolves the identity to act as (defaultAs unless --as is given).
func Open(ctx context.Context, opts Options, defaultAs string) (*Env, error) {
	if opts.As == "" {
		opts.As = defaultAs
	}
	e := &Env{opts: opts, tel: opts.Telemetry}
	if e.tel == nil {
		e.tel = telemetry.Discard("custody")
	}
	switch {
	case opts.DevDir != "":
		l := devstack.Layout{Dir: opts.DevDir}
		if _, ok := devstack.Identities[opts.As]; !ok {
			return nil, fmt.Errorf("--as %q: the dev identities are builder, alice, bob, carol, deployer, admin and auditor", opts.As)
		}
		s, err := devstack.ReadStack(l)
		if err != nil {
			return nil, err
		}
		e.stack = s
		e.TD = spiffeid.RequireTrustDomainFromString(s.TrustDomain)
		src, err := identity.OpenFiles(l.IdentityDir(opts.As), e.TD, nil)
		if err != nil {
			return nil, err
		}
		e.Source = src
	default:
		if opts.TrustDomain == "" {
			return nil, errors.New("no stack: pass --dev-dir (or set CUSTODY_DEV_DIR), or --trust-domain with --svid-dir or SPIFFE_ENDPOINT_SOCKET and the --<service>-addr flags")
		}
		td, err := spiffeid.TrustDomainFromString(opts.TrustDomain)
		if err != nil {
			return nil, err
		}
		e.TD = td
		src, err := identity.Open(ctx, identity.Config{WorkloadAPIAddr: os.Getenv(identity.EndpointSocketEnv), Dir: opts.SVIDDir, TrustDomain: td})
		if err != nil {
			return nil, err
		}
		e.Source = src
	}
	return e, nil
}

// Telemetry is the CLI's tracing.
func (e *Env) Telemetry() *telemetry.Telemetry { return e.tel }

// Close releases the identity source.
func (e *Env) Close() error { return e.Source.Close() }

// Addr is where service listens for gRPC.
func (e *Env) Addr(service string) (string, error) {
	if a := e.opts.Addrs[service]; a != "" {
		return a, nil
	}
	if e.stack != nil {
		if a := e.stack.Services[service]["grpc"]; a != "" {
			return a, nil
		}
	}
	return "", fmt.Errorf("no address for %s: pass --%s-addr", service, service)
}

// HTTPSAddr is where service serves HTTPS (host:port) as the dev stack
// recorded it; "" outside dev or if it serves none.
func (e *Env) HTTPSAddr(service string) string {
	if e.stack == nil {
		return ""
	}
	return e.stack.Services[service]["https"]
}

// Dial connects to service over SPIFFE mTLS.
func (e *Env) Dial(service string) (*grpc.ClientConn, error) {
	addr, err := e.Addr(service)
	if err != nil {
		return nil, err
	}
	return rpc.Dial(addr, devstack.ServerID(e.TD, service), e.Source, e.tel)
}

// Trust is the trust root the CLI reached: pinned, then walked forward
// with the signer's newer versions.
type Trust struct {
	// Root is the newest accepted version, unexpired.
	Root *trustroot.Root
	// Chain holds the envelopes from version 2 (1 if pinned at 1) up to
	// Root's, oldest first, for a bundle: whoever verifies it offline
	// walks from their own pinned version.
	Chain [][]byte
}

// Trust pins the trust root (--trust-root, else the dev stack's) and moves
// it forward with every newer version the signer publishes, refusing
// rollbacks, gaps, bad signatures and expired versions.
func (e *Env) Trust(ctx context.Context) (*Trust, error) {
	pinned, err := PinnedRoot(e.opts)
	if err != nil {
		return nil, err
	}
	cc, err := e.Dial("signer")
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	// After version 1, not after the pinned one: the chain goes into
	// bundles for verifiers pinned at older versions.
	resp, err := signerv1.NewSignerServiceClient(cc).GetTrustRoot(ctx, &signerv1.GetTrustRootRequest{AfterVersion: 1})
	if err != nil {
		return nil, fmt.Errorf("get the trust roots from the signer: %w", err)
	}
	now := time.Now()
	if err := pinned.UpdateChain(resp.GetRoots(), now); err != nil {
		return nil, fmt.Errorf("the signer's trust roots do not chain from the pinned v%d: %w", pinned.Version(), err)
	}
	root, err := pinned.Current(now)
	if err != nil {
		return nil, err
	}
	var chain [][]byte
	if pinned.Version() == 1 {
		chain = append(chain, pinned.Envelope())
	}
	for _, r := range resp.GetRoots() {
		if v, err := trustroot.Parse(r); err == nil && v.Version <= root.Version {
			chain = append(chain, r)
		}
	}
	return &Trust{Root: root, Chain: chain}, nil
}

// PinnedRootFile returns the path of the pinned trust root: --trust-root,
// else the dev stack's trust/root.json. It fails if neither is configured.
func PinnedRootFile(opts Options) (string, error) {
	switch {
	case opts.TrustRootFile != "":
		return opts.TrustRootFile, nil
	case opts.DevDir != "":
		return devstack.Layout{Dir: opts.DevDir}.TrustRoot(), nil
	}
	return "", errNoTrust
}

// PinnedRoot reads and pins the trust root without opening an identity,
// for offline verification. The root must be signed by its own threshold;
// it may have expired (a newer version may follow).
func PinnedRoot(opts Options) (*trustroot.Trusted, error) {
	path, err := PinnedRootFile(opts)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the pinned trust root: %w", err)
	}
	t, err := trustroot.Pin(b)
	if err != nil {
		return nil, fmt.Errorf("pinned trust root %s: %w", path, err)
	}
	return t, nil
}

var errNoTrust = errors.New("no pinned trust root: pass --trust-root FILE or --dev-dir")

// ErrNoTrust reports whether err means no trust root was configured.
func ErrNoTrust(err error) bool { return errors.Is(err, errNoTrust) }

// WebRoots are the CAs trusted for HTTPS to edges: --web-ca, else the dev
// stack's, else the system's.
func (e *Env) WebRoots() (*x509.CertPool, error) {
	path := e.opts.WebCAFile
	if path == "" && e.opts.DevDir != "" {
		path = devstack.Layout{Dir: e.opts.DevDir}.WebCA()
	}
	if path == "" {
		return x509.SystemCertPool()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read HTTPS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no certificates in %s", path)
	}
	return pool, nil
}
