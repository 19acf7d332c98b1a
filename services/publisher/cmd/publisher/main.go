// Command publisher is Custody's artifact store: it takes uploads from
// builders, has them signed and recorded, and serves verified downloads.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/custody-dev/custody/libs/daemon"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/services/publisher/internal/bindings"
	"github.com/custody-dev/custody/services/publisher/internal/limits"
	"github.com/custody-dev/custody/services/publisher/internal/resume"
	"github.com/custody-dev/custody/services/publisher/internal/retention"
	"github.com/custody-dev/custody/services/publisher/internal/server"
	"github.com/custody-dev/custody/services/publisher/internal/signing"
	"github.com/custody-dev/custody/services/publisher/internal/sweep"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 && os.Args[1] == "verify-blobs" {
		err = verifyBlobs(ctx, os.Args[2:], os.Getenv, os.Stdout)
	} else {
		err = run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "publisher:", err)
		os.Exit(1)
	}
}

type config struct {
	daemon.Config
	DataDir, SignerAddr, CatalogAddr string

	MaxSize                         int
	UploadsPerCaller, Uploads       int
	DownloadsPerCaller, Downloads   int
	ProgressTimeout                 time.Duration
	MinRate                         int
	SendTimeout                     time.Duration
	SendMinRate                     int
	ResumeTTL                       time.Duration
	ResumablePerCaller              int
	StreamsPerConn                  int
	KeepaliveTime, KeepaliveTimeout time.Duration
	Store                           storeConfig
	RetentionPolicy                 string
	BrokerAddr                      string
	RetentionInterval               time.Duration
	OrphanAge                       time.Duration
}

func (c *config) validate() error {
	errs := []error{c.Config.Validate(), c.Store.validate()}
	for flag, v := range map[string]string{"--data-dir": c.DataDir, "--signer-addr": c.SignerAddr, "--catalog-addr": c.CatalogAddr} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", flag))
		}
	}
	for flag, v := range map[string]int{"--max-artifact-size": c.MaxSize, "--max-uploads-per-caller": c.UploadsPerCaller, "--max-uploads": c.Uploads,
		"--max-downloads-per-caller": c.DownloadsPerCaller, "--max-downloads": c.Downloads, "--max-resumable-per-caller": c.ResumablePerCaller,
		"--max-streams-per-connection": c.StreamsPerConn} {
		if v < 1 {
			errs = append(errs, fmt.Errorf("%s %d: want 1 or more", flag, v))
		}
	}
	if c.UploadsPerCaller > c.Uploads {
		errs = append(errs, fmt.Errorf("--max-uploads-per-caller %d is above --max-uploads %d", c.UploadsPerCaller, c.Uploads))
	}
	if c.DownloadsPerCaller > c.Downloads {
		errs = append(errs, fmt.Errorf("--max-downloads-per-caller %d is above --max-downloads %d", c.DownloadsPerCaller, c.Downloads))
	}
	if c.StreamsPerConn > 1<<20 {
		errs = append(errs, fmt.Errorf("--max-streams-per-connection %d: want at most %d", c.StreamsPerConn, 1<<20))
	}
	if c.ProgressTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--upload-progress-timeout %s: want 1s or more", c.ProgressTimeout))
	}
	if c.MinRate < 0 {
		errs = append(errs, fmt.Errorf("--upload-min-rate %d: want 0 or more bytes per second", c.MinRate))
	}
	if c.SendTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--download-progress-timeout %s: want 1s or more", c.SendTimeout))
	}
	if c.SendMinRate < 0 {
		errs = append(errs, fmt.Errorf("--download-min-rate %d: want 0 or more bytes per second", c.SendMinRate))
	}
	if c.ResumeTTL < 0 {
		errs = append(errs, fmt.Errorf("--upload-resume-ttl %s: want 0 (no resuming) or more", c.ResumeTTL))
	}
	if c.OrphanAge < time.Minute {
		errs = append(errs, fmt.Errorf("--orphan-age %s: want 1m or more", c.OrphanAge))
	}
	if c.RetentionInterval < time.Minute {
		errs = append(errs, fmt.Errorf("--retention-interval %s: want 1m or more", c.RetentionInterval))
	}
	if c.KeepaliveTime < 10*time.Second || c.KeepaliveTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--keepalive-time %s, --keepalive-timeout %s: want at least 10s and 1s", c.KeepaliveTime, c.KeepaliveTimeout))
	}
	return errors.Join(errs...)
}

func (c *config) limits() server.Limits {
	return server.Limits{
		MaxSize:          int64(c.MaxSize),
		UploadsPerCaller: c.UploadsPerCaller, UploadsTotal: c.Uploads,
		DownloadsPerCaller: c.DownloadsPerCaller, DownloadsTotal: c.Downloads,
		Progress:     limits.Progress{Window: c.ProgressTimeout, MinRate: int64(c.MinRate)},
		SendProgress: limits.Progress{Window: c.SendTimeout, MinRate: int64(c.SendMinRate), What: "download"},
	}
}

// transport sets the gRPC limits: one chunk per message, streams per
// connection, and keepalive pings that find dead connections (so their
// uploads are kept for a resume) before the progress timeout would drop
// them.
func (c *config) transport(sc *rpc.ServerConfig) {
	server.Transport(sc)
	sc.MaxConcurrentStreams = uint32(c.StreamsPerConn)
	sc.KeepaliveTime, sc.KeepaliveTimeout = c.KeepaliveTime, c.KeepaliveTimeout
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg := config{Config: daemon.Config{Service: "publisher"}}
	f := daemon.NewFlags("publisher", getenv)
	f.SetOutput(stderr)
	cfg.RegisterFlags(f)
	f.String(&cfg.DataDir, "data-dir", "CUSTODY_DATA_DIR", "", "directory for blobs and bindings")
	f.String(&cfg.SignerAddr, "signer-addr", "CUSTODY_SIGNER_ADDR", "", "signer gRPC address")
	f.String(&cfg.CatalogAddr, "catalog-addr", "CUSTODY_CATALOG_ADDR", "", "catalog gRPC address")
	f.String(&cfg.BrokerAddr, "broker-addr", "CUSTODY_BROKER_ADDR", "",
		"cdn-broker gRPC address: blobs retention destroys are purged from every edge and CDN cache through it (empty: caches are left to expire)")
	def := server.DefaultLimits()
	f.Int(&cfg.MaxSize, "max-artifact-size", "CUSTODY_MAX_ARTIFACT_SIZE", int(def.MaxSize), "largest artifact accepted, in bytes")
	f.Int(&cfg.UploadsPerCaller, "max-uploads-per-caller", "CUSTODY_MAX_UPLOADS_PER_CALLER", def.UploadsPerCaller, "concurrent uploads one caller may hold")
	f.Int(&cfg.Uploads, "max-uploads", "CUSTODY_MAX_UPLOADS", def.UploadsTotal, "concurrent uploads in total")
	f.Int(&cfg.DownloadsPerCaller, "max-downloads-per-caller", "CUSTODY_MAX_DOWNLOADS_PER_CALLER", def.DownloadsPerCaller, "concurrent downloads one caller may hold")
	f.Int(&cfg.Downloads, "max-downloads", "CUSTODY_MAX_DOWNLOADS", def.DownloadsTotal, "concurrent downloads in total")
	f.Duration(&cfg.ProgressTimeout, "upload-progress-timeout", "CUSTODY_UPLOAD_PROGRESS_TIMEOUT", def.Progress.Window, "an upload that moves less than --upload-min-rate over this long is aborted and its bytes removed")
	f.Int(&cfg.MinRate, "upload-min-rate", "CUSTODY_UPLOAD_MIN_RATE", int(def.Progress.MinRate), "bytes per second an upload must average over each --upload-progress-timeout")
	f.Duration(&cfg.SendTimeout, "download-progress-timeout", "CUSTODY_DOWNLOAD_PROGRESS_TIMEOUT", def.SendProgress.Window, "a download whose reader takes less than --download-min-rate over this long is cut and its file and slot released")
	f.Int(&cfg.SendMinRate, "download-min-rate", "CUSTODY_DOWNLOAD_MIN_RATE", int(def.SendProgress.MinRate), "bytes per second a download's reader must take on average over each --download-progress-timeout")
	f.Duration(&cfg.ResumeTTL, "upload-resume-ttl", "CUSTODY_UPLOAD_RESUME_TTL", time.Hour, "how long the bytes of an interrupted upload with an upload id are kept for a resume; 0 disables resuming")
	f.Int(&cfg.ResumablePerCaller, "max-resumable-per-caller", "CUSTODY_MAX_RESUMABLE_PER_CALLER", 4, "interrupted uploads kept per caller; a new one evicts the oldest")
	f.Int(&cfg.StreamsPerConn, "max-streams-per-connection", "CUSTODY_MAX_STREAMS_PER_CONNECTION", 128, "concurrent RPCs on one client connection")
	f.Duration(&cfg.KeepaliveTime, "keepalive-time", "CUSTODY_KEEPALIVE_TIME", 30*time.Second, "ping a client after this long without traffic")
	f.Duration(&cfg.KeepaliveTimeout, "keepalive-timeout", "CUSTODY_KEEPALIVE_TIMEOUT", 10*time.Second, "close a connection whose client does not answer a ping within this")
	f.String(&cfg.RetentionPolicy, "retention-policy", "CUSTODY_RETENTION_POLICY", "", "retention policy file (JSON: {\"channels\": {\"dev\": {\"keep_last\": 10, \"max_age\": \"720h\"}}}); empty: nothing is ever deleted")
	f.Duration(&cfg.RetentionInterval, "retention-interval", "CUSTODY_RETENTION_INTERVAL", time.Hour, "how often the retention policy runs")
	f.Duration(&cfg.OrphanAge, "orphan-age", "CUSTODY_ORPHAN_AGE", time.Hour, "ciphertext without a record, blobs without a binding and temporary files of aborted writes are collected once unreferenced this long (swept every half of it)")
	cfg.Store.register(f)
	if err := f.Parse(args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	var policy *retention.Policy
	if cfg.RetentionPolicy != "" {
		p, err := retention.LoadPolicy(cfg.RetentionPolicy)
		if err != nil {
			return err
		}
		policy = p
	}
	binds, err := bindings.Open(filepath.Join(cfg.DataDir, "bindings"))
	if err != nil {
		return err
	}
	d, err := daemon.Start(ctx, cfg.Config, stderr)
	if err != nil {
		return err
	}
	defer d.Close()
	signerConn, err := d.Dial(cfg.SignerAddr, "signer")
	if err != nil {
		return err
	}
	defer signerConn.Close()
	blobs, err := cfg.Store.open(cfg.DataDir, d.Logger, signerv1.NewKeyWrapServiceClient(signerConn), cfg.SignerAddr)
	if err != nil {
		return err
	}
	catalogConn, err := d.Dial(cfg.CatalogAddr, "catalog")
	if err != nil {
		return err
	}
	defer catalogConn.Close()
	authz := server.Policy(d.TrustDomain)
	maps.Copy(authz, server.StorePolicy(d.TrustDomain))
	srv := d.NewServer(authz, cfg.transport)
	signer := signerv1.NewSignerServiceClient(signerConn)
	api := server.New(blobs, binds, signer, catalogv1.NewCatalogServiceClient(catalogConn), d.Logger, d.Telemetry.Metrics)
	api.SetBatcher(signing.New(signer, signing.MaxInFlight, signing.MaxBatch))
	api.SetLimits(cfg.limits())
	var components []daemon.Component
	// Retention's journal is finished before any upload can bind: a
	// deletion a crash interrupted never leaves a half-destroyed blob that
	// an upload of the same bytes would bind to.
	catalog := catalogv1.NewCatalogServiceClient(catalogConn)
	var purger retention.Purger
	if cfg.BrokerAddr != "" {
		brokerConn, err := d.Dial(cfg.BrokerAddr, "cdn-broker")
		if err != nil {
			return err
		}
		defer brokerConn.Close()
		purger = cdnbrokerv1.NewCdnBrokerServiceClient(brokerConn)
	} else if policy != nil {
		d.Logger.WarnContext(ctx, "retention without --broker-addr: destroyed blobs stay in edge and CDN caches until they expire")
	}
	runner, err := retention.New(retention.Config{Policy: policy, Blobs: blobs, Bindings: binds, Catalog: catalog, Purger: purger,
		JournalDir: filepath.Join(cfg.DataDir, "retention"), Logger: d.Logger, Registerer: d.Telemetry.Registry})
	if err != nil {
		return err
	}
	if err := runner.Recover(ctx, false); err != nil {
		return err
	}
	api.SetRetention(runner)
	tempDirs := []string{filepath.Join(cfg.DataDir, "bindings", "tmp")}
	if cfg.Store.Backend == "local" {
		tempDirs = append(tempDirs, filepath.Join(cfg.DataDir, "blobs", "tmp"))
	}
	sweeper := sweep.New(sweep.Config{Blobs: blobs, Bindings: binds, Exclude: runner, TempDirs: tempDirs, Age: cfg.OrphanAge, Logger: d.Logger})
	components = append(components, func(ctx context.Context) error { return sweeper.Loop(ctx, cfg.OrphanAge/2) })
	store := server.NewStore(blobs, d.Logger)
	if policy != nil {
		store.SetRetention(runner)
		components = append(components, func(ctx context.Context) error { return runner.Loop(ctx, cfg.RetentionInterval) })
	}
	if cfg.ResumeTTL > 0 {
		partial, err := resume.Open(resume.Config{Dir: filepath.Join(cfg.DataDir, "partial"), TTL: cfg.ResumeTTL, MaxPerCaller: cfg.ResumablePerCaller, KEK: blobs.KEK()})
		if err != nil {
			return err
		}
		api.SetResume(partial)
		components = append(components, func(ctx context.Context) error { return partial.Run(ctx, min(cfg.ResumeTTL/4, time.Minute)) })
	}
	publisherv1.RegisterPublisherServiceServer(srv, api)
	publisherv1.RegisterStoreServiceServer(srv, store)
	return d.Serve(ctx, srv, components...)
}
