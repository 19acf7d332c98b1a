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
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/services/publisher/internal/bindings"
	"github.com/custody-dev/custody/services/publisher/internal/limits"
	"github.com/custody-dev/custody/services/publisher/internal/resume"
	"github.com/custody-dev/custody/services/publisher/internal/server"
	"github.com/custody-dev/custody/services/publisher/internal/signing"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
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
	ResumeTTL                       time.Duration
	ResumablePerCaller              int
	StreamsPerConn                  int
	KeepaliveTime, KeepaliveTimeout time.Duration
	Store                           storeConfig
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
	if c.ResumeTTL < 0 {
		errs = append(errs, fmt.Errorf("--upload-resume-ttl %s: want 0 (no resuming) or more", c.ResumeTTL))
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
		Progress: limits.Progress{Window: c.ProgressTimeout, MinRate: int64(c.MinRate)},
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
	def := server.DefaultLimits()
	f.Int(&cfg.MaxSize, "max-artifact-size", "CUSTODY_MAX_ARTIFACT_SIZE", int(def.MaxSize), "largest artifact accepted, in bytes")
	f.Int(&cfg.UploadsPerCaller, "max-uploads-per-caller", "CUSTODY_MAX_UPLOADS_PER_CALLER", def.UploadsPerCaller, "concurrent uploads one caller may hold")
	f.Int(&cfg.Uploads, "max-uploads", "CUSTODY_MAX_UPLOADS", def.UploadsTotal, "concurrent uploads in total")
	f.Int(&cfg.DownloadsPerCaller, "max-downloads-per-caller", "CUSTODY_MAX_DOWNLOADS_PER_CALLER", def.DownloadsPerCaller, "concurrent downloads one caller may hold")
	f.Int(&cfg.Downloads, "max-downloads", "CUSTODY_MAX_DOWNLOADS", def.DownloadsTotal, "concurrent downloads in total")
	f.Duration(&cfg.ProgressTimeout, "upload-progress-timeout", "CUSTODY_UPLOAD_PROGRESS_TIMEOUT", def.Progress.Window, "an upload that moves less than --upload-min-rate over this long is aborted and its bytes removed")
	f.Int(&cfg.MinRate, "upload-min-rate", "CUSTODY_UPLOAD_MIN_RATE", int(def.Progress.MinRate), "bytes per second an upload must average over each --upload-progress-timeout")
	f.Duration(&cfg.ResumeTTL, "upload-resume-ttl", "CUSTODY_UPLOAD_RESUME_TTL", time.Hour, "how long the bytes of an interrupted upload with an upload id are kept for a resume; 0 disables resuming")
	f.Int(&cfg.ResumablePerCaller, "max-resumable-per-caller", "CUSTODY_MAX_RESUMABLE_PER_CALLER", 4, "interrupted uploads kept per caller; a new one evicts the oldest")
	f.Int(&cfg.StreamsPerConn, "max-streams-per-connection", "CUSTODY_MAX_STREAMS_PER_CONNECTION", 128, "concurrent RPCs on one client connection")
	f.Duration(&cfg.KeepaliveTime, "keepalive-time", "CUSTODY_KEEPALIVE_TIME", 30*time.Second, "ping a client after this long without traffic")
	f.Duration(&cfg.KeepaliveTimeout, "keepalive-timeout", "CUSTODY_KEEPALIVE_TIMEOUT", 10*time.Second, "close a connection whose client does not answer a ping within this")
	cfg.Store.register(f)
	if err := f.Parse(args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
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
	policy := server.Policy(d.TrustDomain)
	maps.Copy(policy, server.StorePolicy(d.TrustDomain))
	srv := d.NewServer(policy, cfg.transport)
	signer := signerv1.NewSignerServiceClient(signerConn)
	api := server.New(blobs, binds, signer, catalogv1.NewCatalogServiceClient(catalogConn), d.Logger, d.Telemetry.Metrics)
	api.SetBatcher(signing.New(signer, signing.MaxInFlight, signing.MaxBatch))
	api.SetLimits(cfg.limits())
	var components []daemon.Component
	if cfg.ResumeTTL > 0 {
		partial, err := resume.Open(resume.Config{Dir: filepath.Join(cfg.DataDir, "partial"), TTL: cfg.ResumeTTL, MaxPerCaller: cfg.ResumablePerCaller})
		if err != nil {
			return err
		}
		api.SetResume(partial)
		components = append(components, func(ctx context.Context) error { return partial.Run(ctx, min(cfg.ResumeTTL/4, time.Minute)) })
	}
	publisherv1.RegisterPublisherServiceServer(srv, api)
	publisherv1.RegisterStoreServiceServer(srv, server.NewStore(blobs, d.Logger))
	return d.Serve(ctx, srv, components...)
}
