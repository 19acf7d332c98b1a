// Package identity provides X.509-SVIDs and trust bundles to Custody processes
// and the mTLS credentials built from them.
package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// File names inside an SVID directory, as written by `custody dev up`.
const (
	SVIDFile    = "svid.pem"
	SVIDKeyFile = "svid_key.pem"
	BundleFile  = "bundle.pem"
)

// EndpointSocketEnv names the environment variable that points at the SPIFFE
// Workload API.
const EndpointSocketEnv = "SPIFFE_ENDPOINT_SOCKET"

// Source provides the process's current X.509-SVID and the trust bundles to
// verify peers with. Implementations are safe for concurrent use and pick up
// rotated SVIDs without a restart.
type Source interface {
	x509svid.Source
	x509bundle.Source
	Close() error
}

// Config selects where SVIDs come from.
type Config struct {
	// WorkloadAPIAddr is the Workload API socket ("unix:///path"). When set,
	// SVIDs come from the Workload API and Dir is ignored.
	WorkloadAPIAddr string
	// Dir holds svid.pem, svid_key.pem (PKCS#8) and bundle.pem.
	Dir string
	// TrustDomain is the trust domain of the bundle in Dir.
	TrustDomain spiffeid.TrustDomain
	Logger      *slog.Logger
}

// Open returns a Source from the Workload API if cfg.WorkloadAPIAddr is set,
// otherwise from the files in cfg.Dir. It fails if no SVID can be obtained.
func Open(ctx context.Context, cfg Config) (Source, error) {
	if cfg.WorkloadAPIAddr != "" {
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(cfg.WorkloadAPIAddr)))
		if err != nil {
			return nil, fmt.Errorf("get X.509-SVID from the Workload API at %s: %w (is the SPIRE agent running and is this workload registered?)", cfg.WorkloadAPIAddr, err)
		}
		return src, nil
	}
	if cfg.Dir == "" {
		return nil, errors.New("no SVID source: set " + EndpointSocketEnv + " or give an SVID directory")
	}
	return OpenFiles(cfg.Dir, cfg.TrustDomain, cfg.Logger)
}

// Files is a Source backed by PEM files in a directory. It re-reads them when
// their modification time changes, at most once per reloadInterval, and keeps
// serving the last good SVID if a rewrite is caught half done.
type Files struct {
	dir    string
	td     spiffeid.TrustDomain
	logger *slog.Logger
	now    func() time.Time

	mu        sync.Mutex
	checkedAt time.Time
	stamp     string
	svid      *x509svid.SVID
	bundle    *x509bundle.Bundle
}

var _ Source = (*Files)(nil)

const reloadInterval = time.Second

// OpenFiles loads the SVID, key and bundle from dir.
func OpenFiles(dir string, td spiffeid.TrustDomain, logger *slog.Logger) (*Files, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &Files{dir: dir, td: td, logger: logger, now: time.Now}
	stamp, err := f.currentStamp()
	if err != nil {
		return nil, err
	}
	if err := f.load(stamp); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Files) currentStamp() (string, error) {
	var stamp string
	for _, name := range []string{SVIDFile, SVIDKeyFile, BundleFile} {
		fi, err := os.Stat(filepath.Join(f.dir, name))
		if err != nil {
			return "", fmt.Errorf("read SVID files: %w", err)
		}
		stamp += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return stamp, nil
}

func (f *Files) load(stamp string) error {
	svid, err := x509svid.Load(filepath.Join(f.dir, SVIDFile), filepath.Join(f.dir, SVIDKeyFile))
	if err != nil {
		return fmt.Errorf("load X.509-SVID from %s: %w", f.dir, err)
	}
	bundle, err := x509bundle.Load(f.td, filepath.Join(f.dir, BundleFile))
	if err != nil {
		return fmt.Errorf("load trust bundle from %s: %w", f.dir, err)
	}
	f.svid, f.bundle, f.stamp = svid, bundle, stamp
	return nil
}

func (f *Files) refresh() {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if now.Sub(f.checkedAt) < reloadInterval {
		return
	}
	f.checkedAt = now
	stamp, err := f.currentStamp()
	if err != nil || stamp == f.stamp {
		return
	}
	if err := f.load(stamp); err != nil {
		f.logger.Warn("keeping previous SVID: reload failed", slog.String("dir", f.dir), slog.Any("error", err))
		return
	}
	f.logger.Info("reloaded SVID", slog.String("id", f.svid.ID.String()), slog.Time("not_after", f.svid.Certificates[0].NotAfter))
}

// GetX509SVID returns the newest SVID. It is called on every TLS handshake.
func (f *Files) GetX509SVID() (*x509svid.SVID, error) {
	f.refresh()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.svid, nil
}

// GetX509BundleForTrustDomain returns the bundle for td, the only trust
// domain a file source knows.
func (f *Files) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	f.refresh()
	f.mu.Lock()
	defer f.mu.Unlock()
	if td != f.td {
		return nil, fmt.Errorf("no trust bundle for trust domain %q", td)
	}
	return f.bundle, nil
}

// Close releases nothing; it exists to satisfy Source.
func (f *Files) Close() error { return nil }
