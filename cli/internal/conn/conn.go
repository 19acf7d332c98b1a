// Package conn resolves how the CLI reaches Custody: which identity it acts
// as, where each service listens, and which keys and CAs it trusts.
package conn

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"

	"github.com/custody-dev/custody/cli/internal/devstack"
	"github.com/custody-dev/custody/cli/internal/evidence"
)

// Options are the CLI's global connection flags.
type Options struct {
	DevDir      string
	As          string
	SVIDDir     string
	TrustDomain string
	TrustFile   string
	WebCAFile   string
	// Addrs maps service names to addresses given on the command line.
	Addrs map[string]string
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
	e := &Env{opts: opts, tel: telemetry.Discard("custody")}
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

// Dial connects to service over SPIFFE mTLS.
func (e *Env) Dial(service string) (*grpc.ClientConn, error) {
	addr, err := e.Addr(service)
	if err != nil {
		return nil, err
	}
	return rpc.Dial(addr, devstack.ServerID(e.TD, service), e.Source, e.tel)
}

// Trust returns the pinned public keys: --trust, else the dev stack's.
func (e *Env) Trust() (evidence.Keys, error) {
	return PinnedTrust(e.opts)
}

// PinnedTrust reads the pinned keys without opening an identity, for offline
// verification. It fails if no trust file is configured.
func PinnedTrust(opts Options) (evidence.Keys, error) {
	switch {
	case opts.TrustFile != "":
		return devstack.ReadTrustFile(opts.TrustFile)
	case opts.DevDir != "":
		return devstack.ReadTrust(devstack.Layout{Dir: opts.DevDir})
	}
	return evidence.Keys{}, errNoTrust
}

var errNoTrust = errors.New("no pinned trust: pass --trust FILE or --dev-dir")

// ErrNoTrust reports whether err means no trust file was configured.
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
