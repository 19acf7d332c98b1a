// Command cdn-broker issues short-lived, digest-bound download URLs to
// holders of an allow decision.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/daemon"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	edgev1 "github.com/custody-dev/custody/libs/gen/custody/edge/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/stopstate"
	"github.com/custody-dev/custody/libs/token"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/edgekeys"
	"github.com/custody-dev/custody/services/cdn-broker/internal/broker"
	"github.com/custody-dev/custody/services/cdn-broker/internal/cdns"
	"github.com/custody-dev/custody/services/cdn-broker/internal/issued"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purges"
)

var edgeNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "cdn-broker:", err)
		os.Exit(1)
	}
}

type config struct {
	daemon.Config
	SignerAddr                string
	TrustRootFile             string
	TrustRefresh              time.Duration
	TokenKeyFiles             []string
	CDNConfigFile             string
	VaultAddr, VaultTokenFile string
	GatekeeperAddr            string
	StopStateMaxAge           time.Duration
	EdgeURLs                  []string
	StateDir, CatalogAddr     string
	EdgeGRPC                  []string
	TokenTTL, DecisionMaxAge  time.Duration
	IssuedFile                string
	IssuedRetention           time.Duration
	IssuedMax                 int
}

func (c *config) validate() error {
	errs := []error{c.Config.Validate()}
	if c.SignerAddr == "" {
		errs = append(errs, errors.New("--signer-addr is required"))
	}
	if c.TrustRootFile == "" {
		errs = append(errs, errors.New("--trust-root is required: the pinned trust root (e.g. `custody dev` trust/root.json); edge URLs are issued only under a token key its edge_token_keys list"))
	}
	if c.TrustRefresh < time.Second || c.TrustRefresh > time.Hour {
		errs = append(errs, fmt.Errorf("--trust-refresh %s: want 1s to 1h", c.TrustRefresh))
	}
	if c.GatekeeperAddr == "" {
		errs = append(errs, errors.New("--gatekeeper-addr is required: the broker learns pauses, the kill switch and revocations from it"))
	}
	if c.StopStateMaxAge <= 0 || c.StopStateMaxAge > time.Minute {
		errs = append(errs, fmt.Errorf("--stop-state-max-age %s: want more than 0 and at most 1m", c.StopStateMaxAge))
	}
	if len(c.TokenKeyFiles) == 0 {
		errs = append(errs, errors.New("--token-private-key-file is required"))
	}
	if len(c.EdgeURLs) == 0 {
		errs = append(errs, errors.New("--edge-url is required (one per edge)"))
	}
	for _, e := range c.EdgeURLs {
		if u, err := url.Parse(e); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("--edge-url %q: want https://host[:port]", e))
		}
	}
	if c.TokenTTL <= 0 || c.TokenTTL > time.Hour {
		errs = append(errs, fmt.Errorf("--token-ttl %s: want more than 0 and at most 1h", c.TokenTTL))
	}
	if (c.VaultAddr == "") != (c.VaultTokenFile == "") {
		errs = append(errs, errors.New("--vault-addr and --vault-token-file go together"))
	}
	if (c.StateDir == "") != (c.CatalogAddr == "") {
		errs = append(errs, errors.New("--state-dir and --catalog-addr go together: purges are queued in the one and logged to the other"))
	}
	for _, e := range c.EdgeGRPC {
		name, addr, ok := strings.Cut(e, "=")
		if !ok || !edgeNameRE.MatchString(name) || addr == "" {
			errs = append(errs, fmt.Errorf("--edge-grpc %q: want NAME=HOST:PORT, NAME as in the edge's SPIFFE ID /edge/NAME", e))
		}
	}
	if len(c.EdgeGRPC) > 0 && c.StateDir == "" {
		errs = append(errs, errors.New("--edge-grpc needs --state-dir and --catalog-addr (the purge queue)"))
	}
	if c.IssuedFile != "" && c.StateDir == "" {
		errs = append(errs, errors.New("--issued-digests-file needs --state-dir and --catalog-addr: the recorded digests are purged through the purge queue"))
	}
	if c.IssuedRetention <= 0 {
		errs = append(errs, fmt.Errorf("--issued-digests-retention %s: must be positive", c.IssuedRetention))
	}
	if c.IssuedMax < 1 || c.IssuedMax > issued.MaxMax {
		errs = append(errs, fmt.Errorf("--issued-digests-max %d: want 1 to %d", c.IssuedMax, issued.MaxMax))
	}
	if c.DecisionMaxAge <= 0 {
		errs = append(errs, fmt.Errorf("--decision-max-age %s: must be positive", c.DecisionMaxAge))
	}
	return errors.Join(errs...)
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg := config{Config: daemon.Config{Service: "cdn-broker"}}
	f := daemon.NewFlags("cdn-broker", getenv)
	f.SetOutput(stderr)
	cfg.RegisterFlags(f)
	f.String(&cfg.SignerAddr, "signer-addr", "CUSTODY_SIGNER_ADDR", "", "signer gRPC address (decision keys, newer trust roots)")
	f.String(&cfg.TrustRootFile, "trust-root", "CUSTODY_TRUST_ROOT", "",
		"the pinned trust root: a DSSE envelope signed by its root keys (e.g. `custody dev` trust/root.json); edge URLs are issued only under a token key its edge_token_keys list at the time, newer versions are fetched from the signer")
	f.Duration(&cfg.TrustRefresh, "trust-refresh", "CUSTODY_TRUST_REFRESH", edgekeys.DefaultRefreshInterval, "how often newer trust roots are asked from the signer")
	f.Entries(&cfg.TokenKeyFiles, "token-private-key-file", "CUSTODY_TOKEN_PRIVATE_KEY_FILES",
		"Ed25519 edge token signing key (PKCS#8 PEM), FILE[,valid-from=RFC3339]; repeatable: the key with the latest valid-from not in the future signs (rotation without a restart)")
	f.Strings(&cfg.EdgeURLs, "edge-url", "CUSTODY_EDGE_URLS", "edge base URL, e.g. https://edge.example:8443")
	f.Duration(&cfg.TokenTTL, "token-ttl", "CUSTODY_TOKEN_TTL", 5*time.Minute, "how long a download URL is valid")
	f.Duration(&cfg.DecisionMaxAge, "decision-max-age", "CUSTODY_DECISION_MAX_AGE", 10*time.Minute, "oldest allow decision accepted")
	f.String(&cfg.CDNConfigFile, "cdn-config-file", "CUSTODY_CDN_CONFIG_FILE", "", "commercial CDNs to sign for (JSON, see docs/services.md); none if empty")
	f.String(&cfg.VaultAddr, "vault-addr", "CUSTODY_VAULT_ADDR", "", "Vault address for CDN keys held in Vault")
	f.String(&cfg.VaultTokenFile, "vault-token-file", "CUSTODY_VAULT_TOKEN_FILE", "", "file holding the Vault token for CDN keys")
	f.String(&cfg.GatekeeperAddr, "gatekeeper-addr", "CUSTODY_GATEKEEPER_ADDR", "", "gatekeeper gRPC address (stop state: pauses, kill switch, revocations)")
	f.Duration(&cfg.StopStateMaxAge, "stop-state-max-age", "CUSTODY_STOP_STATE_MAX_AGE", 3*time.Second,
		"oldest stop state used; older (gatekeeper unreachable) means every request is refused")
	f.String(&cfg.StateDir, "state-dir", "CUSTODY_STATE_DIR", "", "directory for the purge queue (purges.json); purges are off without it")
	f.String(&cfg.CatalogAddr, "catalog-addr", "CUSTODY_CATALOG_ADDR", "", "catalog gRPC address (purge events)")
	f.String(&cfg.IssuedFile, "issued-digests-file", "CUSTODY_ISSUED_DIGESTS_FILE", "",
		"record of the digests issued commercial-CDN URLs, purged from those CDNs on a kill switch (default <state-dir>/issued-digests.json; only with --cdn-config-file)")
	f.Duration(&cfg.IssuedRetention, "issued-digests-retention", "CUSTODY_ISSUED_DIGESTS_RETENTION", issued.DefaultRetention,
		"how long after its last issue a digest stays recorded (default 366 days: longer than the one-year max-age edges send, so longer than a CDN may cache it)")
	f.Int(&cfg.IssuedMax, "issued-digests-max", "CUSTODY_ISSUED_DIGESTS_MAX", issued.DefaultMax,
		"most digests recorded; at the bound the oldest is dropped (custody_broker_issued_digests_dropped_total)")
	f.Strings(&cfg.EdgeGRPC, "edge-grpc", "CUSTODY_EDGE_GRPC", "an edge to purge, NAME=HOST:PORT of its gRPC API (SPIFFE ID /edge/NAME)")
	if err := f.Parse(args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	keys, err := loadTokenKeys(cfg.TokenKeyFiles)
	if err != nil {
		return err
	}
	pinned, err := cfg.trustRoot()
	if err != nil {
		return err
	}
	cdnList, err := loadCDNs(ctx, cfg)
	if err != nil {
		return err
	}
	cdnPurges, err := cdnTargets(ctx, cdnList)
	if err != nil {
		return err
	}
	if len(cdnPurges) > 0 && cfg.StateDir == "" {
		return fmt.Errorf("%s: CDN purge sections need --state-dir and --catalog-addr (the purge queue)", cfg.CDNConfigFile)
	}
	d, err := daemon.Start(ctx, cfg.Config, stderr)
	if err != nil {
		return err
	}
	defer d.Close()
	// brk is set before the stop-state watcher's first poll (stops.Run,
	// in Serve) and the first trust refresh of edgeKeys.Run.
	var brk *broker.Broker
	signerConn, err := d.Dial(cfg.SignerAddr, "signer")
	if err != nil {
		return err
	}
	defer signerConn.Close()
	signer := signerv1.NewSignerServiceClient(signerConn)
	edgeKeys := edgekeys.New(edgekeys.Config{Root: pinned, Logger: d.Logger, Interval: cfg.TrustRefresh,
		AfterRefresh: func(ctx context.Context) { brk.CheckTokenKey(ctx) },
		Source: trustroot.SourceFunc(func(ctx context.Context, after int64) ([][]byte, error) {
			resp, err := signer.GetTrustRoot(ctx, &signerv1.GetTrustRootRequest{AfterVersion: after})
			if err != nil {
				return nil, fmt.Errorf("GetTrustRoot: %w", err)
			}
			return resp.GetRoots(), nil
		})})
	if err := edgeKeys.Refresh(ctx); err != nil {
		d.Logger.WarnContext(ctx, "trust refresh at start failed: using the trust root reached so far", slog.Int64("version", edgeKeys.Version()), slog.Any("error", err))
	}
	d.Logger.InfoContext(ctx, "trust root loaded", slog.Int64("version", edgeKeys.Version()))
	unlisted := prometheus.NewCounter(prometheus.CounterOpts{Name: "custody_broker_unlisted_token_key_total",
		Help: "Download URL requests whose edge URLs were refused: the broker's edge token key is not valid in the current trust root."})
	if err := d.Telemetry.Registry.Register(unlisted); err != nil {
		return err
	}
	gkConn, err := d.Dial(cfg.GatekeeperAddr, "gatekeeper")
	if err != nil {
		return err
	}
	defer gkConn.Close()
	stops := stopstate.NewWatcher(stopstate.WatcherConfig{
		Gatekeeper: gatekeeperv1.NewGatekeeperServiceClient(gkConn), MaxAge: cfg.StopStateMaxAge, Logger: d.Logger, Registry: d.Telemetry.Registry, Service: cfg.Service,
		OnKillSwitch: func(k stopstate.Stop) {
			if brk != nil {
				go brk.PurgeIssuedOnKillSwitch(ctx, k.Epoch, d.ServiceID("cdn-broker").String())
			}
		},
	})
	var components []daemon.Component
	var manager *purges.Manager
	var events broker.EventLog
	var record *issued.Record
	if cfg.StateDir != "" {
		catalogConn, err := d.Dial(cfg.CatalogAddr, "catalog")
		if err != nil {
			return err
		}
		defer catalogConn.Close()
		targets := cdnPurges
		for _, e := range cfg.EdgeGRPC {
			name, addr, _ := strings.Cut(e, "=")
			conn, err := rpc.Dial(addr, spiffeid.RequireFromPath(d.TrustDomain, "/edge/"+name), d.Source, d.Telemetry)
			if err != nil {
				return fmt.Errorf("edge %s: %w", name, err)
			}
			defer conn.Close()
			targets = append(targets, purges.NewEdge(name, edgev1.NewEdgeServiceClient(conn)))
		}
		var names []string
		for _, t := range targets {
			names = append(names, t.Name())
		}
		d.Logger.InfoContext(ctx, "purge targets", slog.Any("targets", names), slog.Int("cdns", len(cdnPurges)))
		var unpurged []string
		for _, c := range cdnList {
			if c.Purge() == nil {
				unpurged = append(unpurged, c.Name())
			}
		}
		if len(unpurged) > 0 {
			d.Logger.WarnContext(ctx, "CDNs without a purge section are never purged: revoked digests stay in their caches until they expire there; purge them by hand (docs/runbooks/purges.md)",
				slog.Any("cdns", unpurged))
		}
		catalog := purges.NewCatalog(catalogv1.NewCatalogServiceClient(catalogConn))
		events = catalog
		manager, err = purges.Open(purges.Config{Dir: cfg.StateDir, Targets: targets, Log: catalog,
			Logger: d.Logger, Registerer: d.Telemetry.Registry})
		if err != nil {
			return err
		}
		components = append(components, manager.Run)
		if len(cdnList) > 0 {
			path := cfg.IssuedFile
			if path == "" {
				path = filepath.Join(cfg.StateDir, "issued-digests.json")
			}
			record, err = issued.Open(issued.Config{Path: path, Retention: cfg.IssuedRetention, Max: cfg.IssuedMax,
				Logger: d.Logger, Registerer: d.Telemetry.Registry})
			if err != nil {
				return err
			}
			components = append(components, record.Run)
		}
	} else {
		d.Logger.WarnContext(ctx, "no --state-dir: PurgeDigests is unavailable and nothing is purged")
		if len(cdnList) > 0 {
			d.Logger.WarnContext(ctx, "no --state-dir: the digests issued commercial-CDN URLs are not recorded, and a kill switch purges no CDN")
		}
	}
	srv := d.NewServer(broker.Policy(d.TrustDomain))
	brk = broker.New(broker.Config{
		TokenKeys: keys, EdgeURLs: cfg.EdgeURLs, CDNs: cdnList, TokenTTL: cfg.TokenTTL, DecisionMaxAge: cfg.DecisionMaxAge,
		Gatekeeper: spiffeid.RequireFromPath(d.TrustDomain, "/service/gatekeeper"),
		Signer:     signer, Stops: stops, Logger: d.Logger, Metrics: d.Telemetry.Metrics, Now: time.Now,
		Purges: manager, Events: events, Issued: record, EdgeKeys: edgeKeys, UnlistedKey: unlisted,
	})
	brk.CheckTokenKey(ctx)
	cdnbrokerv1.RegisterCdnBrokerServiceServer(srv, brk)
	return d.Serve(ctx, srv, append(components, stops.Run, edgeKeys.Run)...)
}

// trustRoot reads and pins the trust root file: it must be signed by its
// own threshold of its own root keys.
func (c *config) trustRoot() (*trustroot.Trusted, error) {
	return trustroot.PinFile("--trust-root", c.TrustRootFile)
}

// loadTokenKeys reads each --token-private-key-file FILE[,valid-from=T].
// Two keys from the same time (two without valid-from among them) would
// leave the signing key to chance and are refused.
func loadTokenKeys(vals []string) ([]broker.TokenKey, error) {
	var keys []broker.TokenKey
	from := map[time.Time]string{}
	for _, v := range vals {
		path, opt, hasOpt := strings.Cut(v, ",")
		var k broker.TokenKey
		if hasOpt {
			ts, ok := strings.CutPrefix(opt, "valid-from=")
			t, err := time.Parse(time.RFC3339, ts)
			if !ok || err != nil {
				return nil, fmt.Errorf("--token-private-key-file %q: want FILE[,valid-from=RFC3339], e.g. new.pem,valid-from=2026-12-31T00:00:00Z", v)
			}
			k.ValidFrom = t.UTC()
		}
		if prev, dup := from[k.ValidFrom]; dup {
			return nil, fmt.Errorf("--token-private-key-file %q and %q are valid from the same time: give the newer key a later valid-from", prev, v)
		}
		from[k.ValidFrom] = v
		key, err := token.LoadPrivateKey(path)
		if err != nil {
			return nil, err
		}
		k.Key = key
		keys = append(keys, k)
	}
	return keys, nil
}

// loadCDNs reads the CDN configuration and every key it names; the broker
// does not start if any is missing or unusable.
func loadCDNs(ctx context.Context, cfg config) ([]*cdns.CDN, error) {
	var vault cdns.SecretReader
	if cfg.VaultAddr != "" {
		v, err := cdns.NewVault(cfg.VaultAddr, cfg.VaultTokenFile, nil)
		if err != nil {
			return nil, err
		}
		vault = v
	}
	if cfg.CDNConfigFile == "" {
		return nil, nil
	}
	return cdns.Load(ctx, cfg.CDNConfigFile, cfg.TokenTTL, time.Now(), vault)
}
