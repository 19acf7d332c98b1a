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

	"github.com/custody-dev/custody/libs/daemon"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/services/publisher/internal/bindings"
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
	Store                            storeConfig
}

func (c *config) validate() error {
	errs := []error{c.Config.Validate(), c.Store.validate()}
	for flag, v := range map[string]string{"--data-dir": c.DataDir, "--signer-addr": c.SignerAddr, "--catalog-addr": c.CatalogAddr} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", flag))
		}
	}
	return errors.Join(errs...)
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg := config{Config: daemon.Config{Service: "publisher"}}
	f := daemon.NewFlags("publisher", getenv)
	f.SetOutput(stderr)
	cfg.RegisterFlags(f)
	f.String(&cfg.DataDir, "data-dir", "CUSTODY_DATA_DIR", "", "directory for blobs and bindings")
	f.String(&cfg.SignerAddr, "signer-addr", "CUSTODY_SIGNER_ADDR", "", "signer gRPC address")
	f.String(&cfg.CatalogAddr, "catalog-addr", "CUSTODY_CATALOG_ADDR", "", "catalog gRPC address")
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
	blobs, err := cfg.Store.open(cfg.DataDir, d.Logger)
	if err != nil {
		return err
	}
	signerConn, err := d.Dial(cfg.SignerAddr, "signer")
	if err != nil {
		return err
	}
	defer signerConn.Close()
	catalogConn, err := d.Dial(cfg.CatalogAddr, "catalog")
	if err != nil {
		return err
	}
	defer catalogConn.Close()
	policy := server.Policy(d.TrustDomain)
	maps.Copy(policy, server.StorePolicy(d.TrustDomain))
	srv := d.NewServer(policy)
	signer := signerv1.NewSignerServiceClient(signerConn)
	api := server.New(blobs, binds, signer, catalogv1.NewCatalogServiceClient(catalogConn), d.Logger, d.Telemetry.Metrics)
	api.SetBatcher(signing.New(signer, signing.MaxInFlight, signing.MaxBatch))
	publisherv1.RegisterPublisherServiceServer(srv, api)
	publisherv1.RegisterStoreServiceServer(srv, server.NewStore(blobs, d.Logger))
	return d.Serve(ctx, srv)
}
