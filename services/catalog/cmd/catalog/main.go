// Command catalog serves Custody's catalog: artifact metadata and envelopes,
// and the audit trail as entries of a Tessera transparency log.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/mod/sumdb/note"
	"k8s.io/klog/v2"

	"github.com/custody-dev/custody/libs/daemon"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/server"
	"github.com/custody-dev/custody/services/catalog/internal/store/postgres"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlite"
	"github.com/custody-dev/custody/services/catalog/internal/tiles"
	"github.com/custody-dev/custody/services/catalog/internal/translog"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if len(os.Args) > 1 && os.Args[1] == "dump-rows" {
		err = dumpRows(ctx, os.Args[2:], os.Stdout)
	} else {
		err = run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "catalog:", err)
		os.Exit(1)
	}
}

// config is the catalog's configuration.
type config struct {
	daemon.Config
	DataDir           string
	Store             string
	PostgresDSNFile   string
	LogPrivateKeyFile string
	// LogMySQLDSNFile, if set, keeps the log in MySQL/MariaDB through
	// Tessera's MySQL driver instead of the POSIX one in --data-dir.
	LogMySQLDSNFile string
	SignerAddr      string
	CosignWait      time.Duration
	// CosignRefresh is how often an idle log's checkpoint is co-signed
	// again (translog.Config.CosignRefresh).
	CosignRefresh time.Duration
	// HTTPSListen, if set, serves the log read-only in the tlog-tiles
	// layout with CertFile and KeyFile.
	HTTPSListen, CertFile, KeyFile string
	// AdvertiseAddr is the address followers reach this catalog at when
	// it writes the log; empty: the bound gRPC address (0070).
	AdvertiseAddr string
	// LeasePoll is how often a follower tries the log-writer lease.
	LeasePoll time.Duration
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	cfg := &config{Config: daemon.Config{Service: "catalog"}}
	f := daemon.NewFlags("catalog", getenv)
	f.SetOutput(stderr)
	cfg.RegisterFlags(f)
	f.String(&cfg.DataDir, "data-dir", "CUSTODY_DATA_DIR", "", "directory for catalog.db (SQLite) and log/ (Tessera POSIX log)")
	f.String(&cfg.Store, "store", "CUSTODY_STORE", "sqlite", "metadata back end: sqlite (catalog.db in --data-dir) or postgres (--postgres-dsn-file)")
	f.String(&cfg.PostgresDSNFile, "postgres-dsn-file", "CUSTODY_POSTGRES_DSN_FILE", "",
		"file with the PostgreSQL connection string (postgres://user:password@host:port/db?sslmode=verify-full); with --store postgres")
	f.String(&cfg.LogPrivateKeyFile, "log-private-key-file", "CUSTODY_LOG_PRIVATE_KEY_FILE", "",
		"file with the note signer key of the log's checkpoints; its name is the log origin")
	f.String(&cfg.LogMySQLDSNFile, "log-mysql-dsn-file", "CUSTODY_LOG_MYSQL_DSN_FILE", "",
		"file with a MySQL/MariaDB DSN (user:password@tcp(host:port)/db) to keep the transparency log in, through Tessera's MySQL driver; empty: the POSIX driver in --data-dir/log")
	f.String(&cfg.SignerAddr, "signer-addr", "CUSTODY_SIGNER_ADDR", "", "signer gRPC address (host:port); it co-signs every checkpoint the catalog serves")
	f.Duration(&cfg.CosignWait, "cosign-wait", "CUSTODY_COSIGN_WAIT", 10*time.Second, "how long a write waits for the signer to co-sign a checkpoint covering it before failing Unavailable")
	f.Duration(&cfg.CosignRefresh, "cosign-refresh", "CUSTODY_COSIGN_REFRESH", translog.DefaultCosignRefresh,
		"how often the signer co-signs the log's checkpoint again while nothing is appended, so that verifiers can bound its age (gatekeeper --max-checkpoint-age, custody log verify --max-age); keep it well below them")
	f.String(&cfg.HTTPSListen, "https-listen", "CUSTODY_HTTPS_LISTEN", "",
		"serve the log read-only over HTTPS (tlog-tiles: /checkpoint, /tile/...) on this address, recorded as https in the endpoints file; empty: not served")
	f.String(&cfg.CertFile, "tls-cert-file", "CUSTODY_TLS_CERT_FILE", "", "HTTPS certificate (PEM), with --https-listen")
	f.String(&cfg.KeyFile, "tls-key-file", "CUSTODY_TLS_KEY_FILE", "", "HTTPS private key (PEM), with --https-listen")
	f.String(&cfg.AdvertiseAddr, "advertise-addr", "CUSTODY_ADVERTISE_ADDR", "",
		"with --store postgres: the gRPC address (host:port) other catalogs forward writes to while this one writes the log; empty: the bound --listen address")
	f.Duration(&cfg.LeasePoll, "lease-poll", "CUSTODY_LEASE_POLL", time.Second,
		"with --store postgres: how often a follower tries to take the log-writer lease, to become the writer when the writer dies")
	if err := f.Parse(args); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Validate returns every problem at once. It reads the key file to check it.
func (c *config) Validate() error {
	errs := []error{c.Config.Validate()}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	switch c.Store {
	case "sqlite":
		if c.PostgresDSNFile != "" {
			errs = append(errs, errors.New("--postgres-dsn-file is set but --store is sqlite: add --store postgres, or drop the file"))
		}
	case "postgres":
		if c.PostgresDSNFile == "" {
			errs = append(errs, errors.New("--store postgres needs --postgres-dsn-file (a file with the connection string; secrets are never flag values)"))
		} else if _, err := c.postgresDSN(); err != nil {
			errs = append(errs, err)
		}
	default:
		errs = append(errs, fmt.Errorf("--store %q: want sqlite or postgres", c.Store))
	}
	if c.LeasePoll <= 0 {
		errs = append(errs, fmt.Errorf("--lease-poll %s: want a positive duration", c.LeasePoll))
	}
	if c.CosignWait <= 0 {
		errs = append(errs, fmt.Errorf("--cosign-wait %s: want a positive duration", c.CosignWait))
	}
	if c.CosignRefresh < time.Second {
		errs = append(errs, fmt.Errorf("--cosign-refresh %s: want at least 1s (a cosignature timestamp has whole seconds)", c.CosignRefresh))
	}
	if c.SignerAddr == "" {
		errs = append(errs, errors.New("--signer-addr is required: the signer co-signs the log's checkpoints, and verifiers trust its key"))
	}
	if c.HTTPSListen != "" && (c.CertFile == "" || c.KeyFile == "") {
		errs = append(errs, errors.New("--https-listen needs --tls-cert-file and --tls-key-file"))
	}
	if c.HTTPSListen == "" && (c.CertFile != "" || c.KeyFile != "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are for --https-listen, which is not set"))
	}
	errs = append(errs, c.validateLogDriver())
	if c.LogPrivateKeyFile == "" {
		errs = append(errs, errors.New("--log-private-key-file is required (a note signer key, e.g. from `custody dev` keys/log.key)"))
	} else if _, err := c.signerKey(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *config) signerKey() (string, error) {
	b, err := os.ReadFile(c.LogPrivateKeyFile)
	if err != nil {
		return "", fmt.Errorf("--log-private-key-file: %w", err)
	}
	key := strings.TrimSpace(string(b))
	if _, err := note.NewSigner(key); err != nil {
		return "", fmt.Errorf("--log-private-key-file %s: not a note signer key (PRIVATE+KEY+<name>+<hash>+<key>): %w", c.LogPrivateKeyFile, err)
	}
	return key, nil
}

// postgresDSN reads the connection string; errors never quote the file's
// contents, which hold a password.
func (c *config) postgresDSN() (string, error) {
	b, err := os.ReadFile(c.PostgresDSNFile)
	if err != nil {
		return "", fmt.Errorf("--postgres-dsn-file: %w", err)
	}
	dsn := strings.TrimSpace(string(b))
	if dsn == "" || strings.ContainsAny(dsn, "\n\r") {
		return "", fmt.Errorf("--postgres-dsn-file %s: want one line with a connection string", c.PostgresDSNFile)
	}
	return dsn, nil
}

// store is what run needs of a metadata back end.
type store interface {
	catalog.Store
	Close() error
}

// openStore opens the back end that cfg names: the one switch over them.
func openStore(ctx context.Context, cfg *config) (store, error) {
	switch cfg.Store {
	case "postgres":
		dsn, err := cfg.postgresDSN()
		if err != nil {
			return nil, err
		}
		return postgres.Open(ctx, dsn)
	default:
		return sqlite.Open(ctx, filepath.Join(cfg.DataDir, "catalog.db"))
	}
}

// leaser is a store shared between processes that can hand one of them a
// lease (PostgreSQL).
type leaser interface {
	WatchLease(ctx context.Context, key string, interval time.Duration) (release func(), lost <-chan error, held bool, err error)
}

// logWriterLease is the lease the one catalog process that writes the log
// holds on a shared store.
const logWriterLease = "log-writer"

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) (err error) {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	key, err := cfg.signerKey()
	if err != nil {
		return err
	}

	daemon.GCPercent(catalog.GCPercent)
	d, err := daemon.Start(ctx, cfg.Config, stderr)
	if err != nil {
		return err
	}
	defer d.Close()
	// Tessera logs through klog's process-wide logger; send it to ours.
	klog.SetSlogLogger(d.Logger.With(slog.String("component", "tessera")))

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create --data-dir: %w", err)
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	d.Logger.Info("metadata store open", slog.String("store", cfg.Store))

	signerConn, err := d.Dial(cfg.SignerAddr, "signer")
	if err != nil {
		return fmt.Errorf("--signer-addr: %w", err)
	}
	defer signerConn.Close()
	r := &roles{cfg: cfg, d: d, store: store, key: key,
		cosigner: translog.NewSignerClient(signerv1.NewSignerServiceClient(signerConn), cfg.SignerAddr)}
	// After the gRPC server has stopped: close the writer's log, then
	// release the lease.
	defer func() { err = errors.Join(err, r.close(ctx)) }()

	policy := server.Policy(d.TrustDomain)
	var components []daemon.Component
	l, shared := store.(leaser)
	held := !shared
	if shared {
		release, lost, ok, err := l.WatchLease(ctx, logWriterLease, cfg.LeasePoll)
		if err != nil {
			return fmt.Errorf("take the log-writer lease: %w", err)
		}
		if ok {
			r.push(func(context.Context) error { release(); return nil })
			go r.stopOnLoss(lost)
		}
		held = ok
	}
	var sw *server.Switch
	if held {
		w, err := r.becomeWriter(ctx, policy)
		if err != nil {
			return err
		}
		sw = server.NewSwitch(w)
		if shared {
			components = append(components, func(ctx context.Context) error { return r.advertise(ctx) })
		}
	} else {
		a, ok := store.(advertiser)
		if !ok {
			return errors.New("the store shares a lease but does not advertise its holder")
		}
		f, err := r.newFollower(policy, a)
		if err != nil {
			return err
		}
		sw = server.NewSwitch(f)
		d.Logger.Info("another catalog holds the log-writer lease: serving as a follower (reads from the store, writes forwarded to the writer; 0070)")
		components = append(components, func(ctx context.Context) error { return r.takeOver(ctx, l, sw, policy) })
	}

	srv := d.NewServer(policy, server.Transport)
	catalogv1.RegisterCatalogServiceServer(srv, sw)
	if cfg.HTTPSListen != "" {
		serveTiles, err := tilesServer(cfg, d, r.checkpoint)
		if err != nil {
			return err
		}
		components = append(components, serveTiles)
	}
	return d.Serve(ctx, srv, components...)
}

// tilesServer returns the component that serves the log over HTTPS: the
// Tessera tiles and entry bundles, and the latest co-signed checkpoint.
func tilesServer(cfg *config, d *daemon.Daemon, checkpoint func(context.Context) ([]byte, error)) (daemon.Component, error) {
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load HTTPS certificate: %w", err)
	}
	hl, err := d.Listen("https", cfg.HTTPSListen)
	if err != nil {
		return nil, err
	}
	h := &tiles.Handler{Dir: filepath.Join(cfg.DataDir, "log"), Logger: d.Logger, Checkpoint: checkpoint}
	hs := &http.Server{
		Handler:           h,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    8 << 10,
	}
	return func(ctx context.Context) error {
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
	}, nil
}
