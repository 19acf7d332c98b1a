// Command edge is Custody's reference CDN edge: it serves verified,
// immutable blobs over HTTPS to holders of a broker token and fetches misses
// from the publisher over mTLS. Clients never trust it: they verify bytes.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/custody-dev/custody/libs/daemon"
	edgev1 "github.com/custody-dev/custody/libs/gen/custody/edge/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/stopstate"
	"github.com/custody-dev/custody/libs/token"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/edgekeys"
	"github.com/custody-dev/custody/services/edge/internal/cache"
	"github.com/custody-dev/custody/services/edge/internal/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
		os.Exit(1)
	}
}

type config struct {
	daemon.Config
	Name, HTTPSListen, CertFile, KeyFile, PublisherAddr, CacheDir string
	TrustRootFile, SignerAddr                                     string
	GatekeeperAddr                                                string
	StopStateMaxAge, TokenMaxLifetime, TokenMaxSkew               time.Duration
	TrustRefresh, OriginStallTimeout                              time.Duration
	CacheMaxMiB                                                   int
	TrustedProxies                                                []string
}

func (c *config) validate() error {
	errs := []error{c.Config.Validate()}
	for flag, v := range map[string]string{"--name": c.Name, "--tls-cert-file": c.CertFile, "--tls-key-file": c.KeyFile,
		"--publisher-addr": c.PublisherAddr, "--cache-dir": c.CacheDir, "--https-listen": c.HTTPSListen} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", flag))
		}
	}
	if c.GatekeeperAddr == "" {
		errs = append(errs, errors.New("--gatekeeper-addr is required: the edge learns the kill switch, pauses and revocations from it"))
	}
	if c.StopStateMaxAge <= 0 || c.StopStateMaxAge > time.Minute {
		errs = append(errs, fmt.Errorf("--stop-state-max-age %s: want more than 0 and at most 1m", c.StopStateMaxAge))
	}
	if c.TokenMaxLifetime <= 0 || c.TokenMaxLifetime > 24*time.Hour {
		errs = append(errs, fmt.Errorf("--token-max-lifetime %s: want more than 0 and at most 24h", c.TokenMaxLifetime))
	}
	if c.TokenMaxSkew < 0 || c.TokenMaxSkew > 10*time.Minute {
		errs = append(errs, fmt.Errorf("--token-max-skew %s: want 0 to 10m", c.TokenMaxSkew))
	}
	if c.TrustRootFile == "" {
		errs = append(errs, errors.New("--trust-root is required: the pinned trust root (e.g. `custody dev` trust/root.json), whose edge_token_keys verify tokens"))
	} else if _, err := c.trustRoot(); err != nil {
		errs = append(errs, err)
	}
	if c.SignerAddr == "" {
		errs = append(errs, errors.New("--signer-addr is required: the edge follows the signer's newer trust roots (token key rotation)"))
	}
	if _, err := c.proxies(); err != nil {
		errs = append(errs, err)
	}
	if c.CacheMaxMiB < 1 {
		errs = append(errs, fmt.Errorf("--cache-max-mib %d: want at least 1 (MiB of cache files on disk)", c.CacheMaxMiB))
	}
	if c.OriginStallTimeout < time.Second || c.OriginStallTimeout > 10*time.Minute {
		errs = append(errs, fmt.Errorf("--origin-stall-timeout %s: want 1s to 10m", c.OriginStallTimeout))
	}
	if c.TrustRefresh < time.Second || c.TrustRefresh > time.Hour {
		errs = append(errs, fmt.Errorf("--trust-refresh %s: want 1s to 1h", c.TrustRefresh))
	}
	return errors.Join(errs...)
}

// proxies parses --trusted-proxy.
func (c *config) proxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range c.TrustedProxies {
		p, err := netip.ParsePrefix(v)
		if err != nil || p != p.Masked() {
			return nil, fmt.Errorf("--trusted-proxy %q: want a masked CIDR such as 10.0.0.0/8 or 192.0.2.7/32", v)
		}
		out = append(out, p)
	}
	return out, nil
}

// trustRoot reads and pins the trust root file: it must be signed by its
// own threshold of its own root keys.
func (c *config) trustRoot() (*trustroot.Trusted, error) {
	return trustroot.PinFile("--trust-root", c.TrustRootFile)
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg := config{Config: daemon.Config{Service: "edge"}}
	f := daemon.NewFlags("edge", getenv)
	f.SetOutput(stderr)
	cfg.RegisterFlags(f)
	f.String(&cfg.Name, "name", "CUSTODY_EDGE_NAME", "", "this edge's name")
	f.String(&cfg.HTTPSListen, "https-listen", "CUSTODY_HTTPS_LISTEN", "127.0.0.1:0", "HTTPS listen address")
	f.String(&cfg.CertFile, "tls-cert-file", "CUSTODY_TLS_CERT_FILE", "", "HTTPS certificate (PEM)")
	f.String(&cfg.KeyFile, "tls-key-file", "CUSTODY_TLS_KEY_FILE", "", "HTTPS private key (PEM)")
	f.String(&cfg.PublisherAddr, "publisher-addr", "CUSTODY_PUBLISHER_ADDR", "", "publisher gRPC address (origin)")
	f.String(&cfg.CacheDir, "cache-dir", "CUSTODY_CACHE_DIR", "", "directory for cached blobs")
	f.String(&cfg.TrustRootFile, "trust-root", "CUSTODY_TRUST_ROOT", "",
		"the pinned trust root: a DSSE envelope signed by its root keys (e.g. `custody dev` trust/root.json); its edge_token_keys verify tokens, newer versions are fetched from the signer")
	f.String(&cfg.SignerAddr, "signer-addr", "CUSTODY_SIGNER_ADDR", "", "signer gRPC address (newer trust roots)")
	f.Strings(&cfg.TrustedProxies, "trusted-proxy", "CUSTODY_TRUSTED_PROXIES",
		"a proxy (CIDR) in front of the edge whose X-Forwarded-For is believed for client-bound tokens; none: the client is the socket peer")
	f.Int(&cfg.CacheMaxMiB, "cache-max-mib", "CUSTODY_CACHE_MAX_MIB", 10<<10,
		"bound of the cache on disk in MiB; the least recently used blobs nobody is reading are evicted, and a blob that does not fit is refused with 503")
	f.Duration(&cfg.OriginStallTimeout, "origin-stall-timeout", "CUSTODY_ORIGIN_STALL_TIMEOUT", 30*time.Second,
		"a fetch from the publisher that delivers nothing for this long is aborted and nothing of it is cached")
	f.Duration(&cfg.TrustRefresh, "trust-refresh", "CUSTODY_TRUST_REFRESH", edgekeys.DefaultRefreshInterval, "how often newer trust roots are asked from the signer")
	f.String(&cfg.GatekeeperAddr, "gatekeeper-addr", "CUSTODY_GATEKEEPER_ADDR", "", "gatekeeper gRPC address (stop state), reached over mTLS as /edge/<name>")
	f.Duration(&cfg.StopStateMaxAge, "stop-state-max-age", "CUSTODY_STOP_STATE_MAX_AGE", 3*time.Second,
		"oldest stop state used; older (gatekeeper unreachable) means every token is refused")
	f.Duration(&cfg.TokenMaxLifetime, "token-max-lifetime", "CUSTODY_TOKEN_MAX_LIFETIME", time.Hour, "longest token lifetime (expiry minus issue time) accepted")
	f.Duration(&cfg.TokenMaxSkew, "token-max-skew", "CUSTODY_TOKEN_MAX_SKEW", time.Minute, "how far in the future a token's issue time may be")
	if err := f.Parse(args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	pinned, err := cfg.trustRoot()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("load HTTPS certificate: %w", err)
	}
	d, err := daemon.Start(ctx, cfg.Config, stderr)
	if err != nil {
		return err
	}
	defer d.Close()
	pubConn, err := d.Dial(cfg.PublisherAddr, "publisher")
	if err != nil {
		return err
	}
	defer pubConn.Close()
	// The cache key is drawn here and lives only in memory: what a previous
	// run cached cannot be read and is dropped.
	c, dropped, err := cache.New(cache.Config{Dir: cfg.CacheDir, Origin: server.Publisher{Client: publisherv1.NewPublisherServiceClient(pubConn)},
		MaxBytes: int64(cfg.CacheMaxMiB) << 20, StallTimeout: cfg.OriginStallTimeout})
	if err != nil {
		return err
	}
	d.Logger.Info("cache opened", slog.String("dir", cfg.CacheDir), slog.Int("dropped", dropped))
	c.OnIntegrityFailure = func(where string) { d.Telemetry.Metrics.IntegrityFailures.WithLabelValues(where).Inc() }

	signerConn, err := d.Dial(cfg.SignerAddr, "signer")
	if err != nil {
		return err
	}
	defer signerConn.Close()
	signer := signerv1.NewSignerServiceClient(signerConn)
	keys := edgekeys.New(edgekeys.Config{Root: pinned, Logger: d.Logger, Interval: cfg.TrustRefresh,
		Source: trustroot.SourceFunc(func(ctx context.Context, after int64) ([][]byte, error) {
			resp, err := signer.GetTrustRoot(ctx, &signerv1.GetTrustRootRequest{AfterVersion: after})
			if err != nil {
				return nil, fmt.Errorf("GetTrustRoot: %w", err)
			}
			return resp.GetRoots(), nil
		})})
	if err := keys.Refresh(ctx); err != nil {
		d.Logger.Warn("trust refresh at start failed: using the trust root reached so far", slog.Int64("version", keys.Version()), slog.Any("error", err))
	}
	if _, err := keys.TokenKeys(time.Now()); err != nil {
		d.Logger.Error("no usable edge token keys: every request is refused until a trust root with edge token keys is published", slog.Any("error", err))
	}
	d.Logger.Info("trust root loaded", slog.Int64("version", keys.Version()))

	gkConn, err := d.Dial(cfg.GatekeeperAddr, "gatekeeper")
	if err != nil {
		return err
	}
	defer gkConn.Close()
	stops := stopstate.NewWatcher(stopstate.WatcherConfig{
		Gatekeeper: gatekeeperv1.NewGatekeeperServiceClient(gkConn), MaxAge: cfg.StopStateMaxAge, Logger: d.Logger, Registry: d.Telemetry.Registry, Service: cfg.Service,
		OnKillSwitch: func(stopstate.Stop) {
			n, err := c.PurgeAll()
			d.Logger.Warn("kill switch on: cache dropped", slog.Int("blobs", n), slog.Any("error", err))
		},
	})

	hl, err := d.Listen("https", cfg.HTTPSListen)
	if err != nil {
		return err
	}
	proxies, _ := cfg.proxies() // validated
	httpMetrics := server.NewHTTPMetrics(d.Telemetry.Registry)
	c.OnEvict = httpMetrics.CacheEvictions.Inc
	hs := &http.Server{
		Handler: &server.Handler{Cache: c, Keys: keys, Stops: stops, Limits: token.Limits{MaxSkew: cfg.TokenMaxSkew, MaxLifetime: cfg.TokenMaxLifetime},
			Logger: d.Logger, Metrics: d.Telemetry.Metrics, HTTP: httpMetrics, Telemetry: d.Telemetry, Now: time.Now, TrustedProxies: proxies},
		TLSConfig:         server.TLSConfig(cert),
		ReadHeaderTimeout: 10 * time.Second,
	}
	srv := d.NewServer(server.Policy(d.TrustDomain))
	edgev1.RegisterEdgeServiceServer(srv, &server.Purger{Cache: c, Logger: d.Logger})
	return d.Serve(ctx, srv, stops.Run, keys.Run, func(ctx context.Context) error {
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			defer cancel()
			_ = hs.Shutdown(sctx)
		}()
		if err := hs.ServeTLS(hl, "", ""); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("HTTPS server: %w", err)
		}
		return nil
	})
}
