// Command signer is Custody's signing service: it holds the signing keys and
// signs provenance and decision records as DSSE envelopes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/custody-dev/custody/libs/daemon"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/services/signer/internal/keys/soft"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "signer:", err)
		os.Exit(1)
	}
}

type config struct {
	daemon.Config
	Dev            bool
	Keystore       string
	PassphraseFile string
}

func (c *config) validate() error {
	errs := []error{c.Config.Validate()}
	if !c.Dev {
		errs = append(errs, errors.New("the software keystore is for development only: start with --dev, or use a Vault Transit or PKCS#11 back end in production (not available in this build yet)"))
	}
	if c.Keystore == "" {
		errs = append(errs, errors.New("--keystore is required"))
	}
	if c.PassphraseFile == "" {
		errs = append(errs, errors.New("--keystore-passphrase-file is required"))
	}
	return errors.Join(errs...)
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg := config{Config: daemon.Config{Service: "signer"}}
	f := daemon.NewFlags("signer", getenv)
	f.SetOutput(stderr)
	cfg.RegisterFlags(f)
	f.Bool(&cfg.Dev, "dev", "CUSTODY_DEV", false, "development mode: allows the software keystore")
	f.String(&cfg.Keystore, "keystore", "CUSTODY_KEYSTORE", "", "software keystore file (created in dev mode if missing)")
	f.String(&cfg.PassphraseFile, "keystore-passphrase-file", "CUSTODY_KEYSTORE_PASSPHRASE_FILE", "", "file holding the keystore passphrase")
	if err := f.Parse(args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	pass, err := soft.ReadPassphrase(cfg.PassphraseFile)
	if err != nil {
		return err
	}
	keys, err := soft.Open(cfg.Keystore, pass, cfg.Dev, time.Now)
	if err != nil {
		return err
	}
	d, err := daemon.Start(ctx, cfg.Config, stderr)
	if err != nil {
		return err
	}
	d.Logger.Warn("using the software keystore: development only")
	srv := d.NewServer(server.Policy(d.TrustDomain))
	signerv1.RegisterSignerServiceServer(srv, server.New(keys, d.Logger))
	return d.Serve(ctx, srv)
}
