// Command signer is Custody's signing service: it holds the signing keys and
// signs provenance and decision records as DSSE envelopes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/custody-dev/custody/libs/daemon"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/custody-dev/custody/services/signer/internal/keys/pkcs11"
	"github.com/custody-dev/custody/services/signer/internal/keys/soft"
	"github.com/custody-dev/custody/services/signer/internal/keys/vault"
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
	Backend        string
	Keystore       string
	PassphraseFile string
	Vault          vault.Config
	PKCS11         pkcs11.Config
	PINFile        string
	ArtifactKey    string
	DecisionKey    string
	CreateKeys     bool
}

func (c *config) validate() error {
	errs := []error{c.Config.Validate()}
	switch c.Backend {
	case "soft":
		if !c.Dev {
			errs = append(errs, errors.New("the software keystore is for development only: start with --dev, or choose --key-backend vault"))
		}
		if c.Keystore == "" {
			errs = append(errs, errors.New("--keystore is required with --key-backend soft"))
		}
		if c.PassphraseFile == "" {
			errs = append(errs, errors.New("--keystore-passphrase-file is required with --key-backend soft"))
		}
	case "vault":
		if c.Vault.Address == "" {
			errs = append(errs, errors.New("--vault-addr is required with --key-backend vault"))
		}
		if c.Vault.TokenFile == "" {
			errs = append(errs, errors.New("--vault-token-file is required with --key-backend vault"))
		}
	case "pkcs11":
		if c.PINFile == "" {
			errs = append(errs, errors.New("--pkcs11-pin-file is required with --key-backend pkcs11"))
		}
		cfg := c.PKCS11
		cfg.PIN = "unchecked"
		if err := cfg.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--pkcs11-*: %w", err))
		}
	default:
		errs = append(errs, fmt.Errorf("--key-backend %q: want vault, pkcs11 or soft (development)", c.Backend))
	}
	for flag, name := range map[string]string{"--artifact-key": c.ArtifactKey, "--decision-key": c.DecisionKey} {
		if !keys.ValidName(name) {
			errs = append(errs, fmt.Errorf("%s %q: want 1-64 of a-z, 0-9, '-', '_', starting with a letter", flag, name))
		}
	}
	if c.ArtifactKey == c.DecisionKey {
		errs = append(errs, errors.New("--artifact-key and --decision-key must differ: a key signs for one purpose only"))
	}
	return errors.Join(errs...)
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg := config{Config: daemon.Config{Service: "signer"}}
	f := daemon.NewFlags("signer", getenv)
	f.SetOutput(stderr)
	cfg.RegisterFlags(f)
	f.Bool(&cfg.Dev, "dev", "CUSTODY_DEV", false, "development mode: allows the software keystore")
	f.String(&cfg.Backend, "key-backend", "CUSTODY_KEY_BACKEND", "soft", "where the keys live: vault, pkcs11, or soft (development only)")
	f.String(&cfg.Keystore, "keystore", "CUSTODY_KEYSTORE", "", "software keystore file (created in dev mode if missing)")
	f.String(&cfg.PassphraseFile, "keystore-passphrase-file", "CUSTODY_KEYSTORE_PASSPHRASE_FILE", "", "file holding the keystore passphrase")
	f.String(&cfg.Vault.Address, "vault-addr", "CUSTODY_VAULT_ADDR", "", "Vault address, e.g. https://vault.example:8200")
	f.String(&cfg.Vault.TokenFile, "vault-token-file", "CUSTODY_VAULT_TOKEN_FILE", "", "file holding the signer's Vault token (re-read when Vault refuses it)")
	f.String(&cfg.Vault.Mount, "vault-transit-mount", "CUSTODY_VAULT_TRANSIT_MOUNT", "transit", "Transit mount path")
	f.String(&cfg.Vault.CACertFile, "vault-ca-cert", "CUSTODY_VAULT_CA_CERT", "", "CA certificate for Vault's TLS (PEM)")
	f.String(&cfg.PKCS11.ModulePath, "pkcs11-module", "CUSTODY_PKCS11_MODULE", "", "PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so")
	f.String(&cfg.PKCS11.TokenLabel, "pkcs11-token-label", "CUSTODY_PKCS11_TOKEN_LABEL", "", "label of the token holding the keys")
	f.String(&cfg.PINFile, "pkcs11-pin-file", "CUSTODY_PKCS11_PIN_FILE", "", "file holding the token's user PIN")
	f.String(&cfg.ArtifactKey, "artifact-key", "CUSTODY_ARTIFACT_KEY", "artifact", "back-end key that signs artifact provenance")
	f.String(&cfg.DecisionKey, "decision-key", "CUSTODY_DECISION_KEY", "decision", "back-end key that signs gatekeeper decisions")
	f.Bool(&cfg.CreateKeys, "create-keys", "CUSTODY_CREATE_KEYS", false, "create missing keys at start (always on with --dev; Vault needs a custodian token for this)")
	if err := f.Parse(args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	backend, err := openBackend(cfg)
	if err != nil {
		return err
	}
	defer backend.Close()
	d, err := daemon.Start(ctx, cfg.Config, stderr)
	if err != nil {
		return err
	}
	defer d.Close()
	names := server.Keys{Artifact: cfg.ArtifactKey, Decision: cfg.DecisionKey}
	if cfg.CreateKeys || cfg.Dev {
		if err := server.EnsureKeys(ctx, backend, names); err != nil {
			if !errors.Is(err, keys.ErrUnavailable) {
				return fmt.Errorf("create keys: %w", err)
			}
			// Fail closed per request, not at start: the back end may
			// come back, and then so does signing.
			d.Logger.Error("cannot check the signing keys now; signing fails until the key back end is back", slog.Any("error", err))
		}
	}
	if cfg.Backend == "soft" {
		d.Logger.Warn("using the software keystore: development only")
	}
	d.Logger.Info("key back end", slog.String("backend", backend.Kind()), slog.String("artifact_key", cfg.ArtifactKey), slog.String("decision_key", cfg.DecisionKey))
	srv := d.NewServer(server.Policy(d.TrustDomain))
	signerv1.RegisterSignerServiceServer(srv, server.New(keys.NewCoalescer(backend, 8, vault.MaxBatch), names, d.Logger))
	return d.Serve(ctx, srv)
}

func openBackend(cfg config) (keys.Backend, error) {
	switch cfg.Backend {
	case "vault":
		return vault.Open(cfg.Vault)
	case "pkcs11":
		pin, err := pkcs11.ReadPIN(cfg.PINFile)
		if err != nil {
			return nil, err
		}
		c := cfg.PKCS11
		c.PIN = pin
		return pkcs11.Open(c)
	default:
		pass, err := soft.ReadPassphrase(cfg.PassphraseFile)
		if err != nil {
			return nil, err
		}
		return soft.Open(cfg.Keystore, pass, cfg.Dev, time.Now)
	}
}
