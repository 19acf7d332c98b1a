// Command signer is Custody's signing service: it holds the signing keys and
// signs provenance and decision records as DSSE envelopes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/daemon"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/services/signer/internal/approvals"
	"github.com/custody-dev/custody/services/signer/internal/audit"
	"github.com/custody-dev/custody/services/signer/internal/cosign"
	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/custody-dev/custody/services/signer/internal/keys/pkcs11"
	"github.com/custody-dev/custody/services/signer/internal/keys/soft"
	"github.com/custody-dev/custody/services/signer/internal/keys/vault"
	"github.com/custody-dev/custody/services/signer/internal/lifecycle"
	"github.com/custody-dev/custody/services/signer/internal/purge"
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
	BackupKey      string
	CreateKeys     bool
	StateDir       string
	ChannelKeys    []string
	DevRootKeys    []string
	DevThreshold   int
	RootTTL        time.Duration
	EdgeTokenKeys  []string
	LogOrigin      string
	CosignerName   string
	LogKey         string
	CatalogAddr    string
	BrokerAddr     string
	Quorum         string
	Approvers      []string
	ApprovalTTL    time.Duration
	RequestTTL     time.Duration
	ApprovalWait   time.Duration
	WrappingKeys   []string
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
	if !c.Dev && c.CatalogAddr == "" {
		errs = append(errs, errors.New("--catalog-addr is required: key rotations, revocations, trust roots and approvals are logged in the catalog's transparency log"))
	}
	for _, name := range c.WrappingKeys {
		if !keys.ValidName(name) {
			errs = append(errs, fmt.Errorf("--wrapping-key %q: want 1-64 of a-z, 0-9, '-', '_', starting with a letter", name))
		}
	}
	if len(c.WrappingKeys) > 0 && c.Backend != "pkcs11" {
		errs = append(errs, fmt.Errorf("--wrapping-key needs --key-backend pkcs11: KEKs live in the HSM token (the %s back end holds none)", c.Backend))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("--state-dir is required: it keeps revocations, trust roots, approvals and co-signed checkpoints"))
	}
	if _, err := channelKeys(c.ChannelKeys); err != nil {
		errs = append(errs, err)
	}
	for _, ck := range c.ChannelKeys {
		if _, name, _ := strings.Cut(ck, "="); name == c.DecisionKey {
			errs = append(errs, fmt.Errorf("--channel-key %s: the decision key signs decisions only", ck))
		}
	}
	if len(c.DevRootKeys) > 0 && !c.Dev {
		errs = append(errs, errors.New("--dev-root-key lets the signer sign trust roots itself: development only (--dev); in production root keys stay offline (custody trustroot sign)"))
	}
	if len(c.DevRootKeys) > 0 && (c.DevThreshold < 1 || c.DevThreshold > len(c.DevRootKeys)) {
		errs = append(errs, fmt.Errorf("--dev-root-threshold %d: want 1 to %d (the number of --dev-root-key files)", c.DevThreshold, len(c.DevRootKeys)))
	}
	if c.RootTTL < time.Hour {
		errs = append(errs, fmt.Errorf("--trust-root-ttl %s: want at least 1h", c.RootTTL))
	}
	if c.ArtifactKey == c.DecisionKey {
		errs = append(errs, errors.New("--artifact-key and --decision-key must differ: a key signs for one purpose only"))
	}
	if c.BackupKey != "" {
		if !keys.ValidName(c.BackupKey) {
			errs = append(errs, fmt.Errorf("--backup-key %q: want 1-64 of a-z, 0-9, '-', '_', starting with a letter", c.BackupKey))
		}
		if c.BackupKey == c.ArtifactKey || c.BackupKey == c.DecisionKey || c.BackupKey == c.LogKey {
			errs = append(errs, errors.New("--backup-key must differ from --artifact-key, --decision-key and --log-key: a key signs for one purpose only"))
		}
		for _, ck := range c.ChannelKeys {
			if _, name, _ := strings.Cut(ck, "="); name == c.BackupKey {
				errs = append(errs, fmt.Errorf("--channel-key %s: the backup key signs backup manifests only", ck))
			}
		}
	}
	if !keys.ValidName(c.LogKey) {
		errs = append(errs, fmt.Errorf("--log-key %q: want 1-64 of a-z, 0-9, '-', '_', starting with a letter", c.LogKey))
	}
	if c.LogKey == c.ArtifactKey || c.LogKey == c.DecisionKey {
		errs = append(errs, errors.New("--log-key must differ from --artifact-key and --decision-key: a key signs for one purpose only"))
	}
	for _, ck := range c.ChannelKeys {
		if _, name, _ := strings.Cut(ck, "="); name == c.LogKey {
			errs = append(errs, fmt.Errorf("--channel-key %s: the log key co-signs checkpoints only", ck))
		}
	}
	if _, _, err := tlog.GenerateKey(c.LogOrigin); err != nil {
		errs = append(errs, fmt.Errorf("--log-origin: %w", err))
	}
	if _, _, err := tlog.GenerateKey(c.CosignerName); err != nil {
		errs = append(errs, fmt.Errorf("--cosigner-name: %w", err))
	} else if c.CosignerName == c.LogOrigin {
		errs = append(errs, fmt.Errorf("--cosigner-name %q is the log's origin: name the cosigner apart from the log, e.g. custody.dev/signer", c.CosignerName))
	}
	if acfg, err := c.approvals(); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, acfg.Validate())
		if acfg.Protected() && c.CatalogAddr == "" {
			errs = append(errs, errors.New("--catalog-addr is required when a channel needs approvals (--quorum): every approval is logged"))
		}
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
	f.String(&cfg.BackupKey, "backup-key", "CUSTODY_BACKUP_KEY", "", "back-end key that signs backup-set manifests (custody backup create); empty: none")
	f.Bool(&cfg.CreateKeys, "create-keys", "CUSTODY_CREATE_KEYS", false, "create missing keys at start (always on with --dev; Vault needs a custodian token for this)")
	f.String(&cfg.StateDir, "state-dir", "CUSTODY_STATE_DIR", "", "directory for the signer's state: key lifecycle and trust roots, approvals, co-signed checkpoints")
	f.Strings(&cfg.ChannelKeys, "channel-key", "CUSTODY_CHANNEL_KEYS", "CHANNEL=KEY: the artifacts of CHANNEL are signed by KEY instead of --artifact-key")
	f.Strings(&cfg.DevRootKeys, "dev-root-key", "CUSTODY_DEV_ROOT_KEYS", "development only: a trust-root private key file; the signer signs and publishes new trust roots itself")
	f.Int(&cfg.DevThreshold, "dev-root-threshold", "CUSTODY_DEV_ROOT_THRESHOLD", 1, "development only: root signatures a trust root needs")
	f.Duration(&cfg.RootTTL, "trust-root-ttl", "CUSTODY_TRUST_ROOT_TTL", 365*24*time.Hour, "how long a drafted trust root is valid")
	f.Entries(&cfg.EdgeTokenKeys, "edge-token-public-key-file", "CUSTODY_EDGE_TOKEN_PUBLIC_KEY_FILES", "edge token verification key (Ed25519 PKIX PEM) to list in trust roots: FILE[,valid-from=RFC3339][,valid-until=RFC3339]")
	f.String(&cfg.LogOrigin, "log-origin", "CUSTODY_LOG_ORIGIN", "custody.dev/log", "origin of the catalog's log, whose checkpoints the signer co-signs")
	f.String(&cfg.CosignerName, "cosigner-name", "CUSTODY_COSIGNER_NAME", "custody.dev/signer", "key name of the signer's cosignature/v1 signatures on log checkpoints; must differ from --log-origin")
	f.String(&cfg.LogKey, "log-key", "CUSTODY_LOG_KEY", "log", "back-end Ed25519 key that co-signs log checkpoints")
	f.String(&cfg.BrokerAddr, "broker-addr", "CUSTODY_BROKER_ADDR", "", "cdn-broker gRPC address: a key revocation's artifacts are purged from every cache (needs --catalog-addr)")
	f.String(&cfg.CatalogAddr, "catalog-addr", "CUSTODY_CATALOG_ADDR", "", "catalog gRPC address, for audit events (required with --quorum)")
	f.String(&cfg.Quorum, "quorum", "CUSTODY_QUORUM", "", "approvals each channel needs before signing, e.g. prod=2,staging=1; unlisted channels need none")
	f.Strings(&cfg.Approvers, "approvers", "CUSTODY_APPROVERS", "SPIFFE IDs that may approve (default: every ID under /approver/ of the trust domain)")
	f.Duration(&cfg.ApprovalTTL, "approval-ttl", "CUSTODY_APPROVAL_TTL", approvals.DefaultApprovalTTL, "how long an approval counts")
	f.Duration(&cfg.RequestTTL, "approval-request-ttl", "CUSTODY_APPROVAL_REQUEST_TTL", approvals.DefaultRequestTTL, "how long an approval request lives (and an approved one may be signed)")
	f.Duration(&cfg.ApprovalWait, "approval-max-wait", "CUSTODY_APPROVAL_MAX_WAIT", approvals.DefaultMaxWait, "how long one signing request waits for approvals")
	f.Strings(&cfg.WrappingKeys, "wrapping-key", "CUSTODY_WRAPPING_KEYS", "name of a KEK in the PKCS#11 token that wraps the publisher's data keys (KeyWrapService); created with --create-keys or --dev")
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
	names := server.Keys{Artifact: cfg.ArtifactKey, Decision: cfg.DecisionKey, Backup: cfg.BackupKey, Log: cfg.LogKey}
	chKeys, _ := channelKeys(cfg.ChannelKeys)
	if cfg.CreateKeys || cfg.Dev {
		if err := ensureChannelKeys(ctx, backend, chKeys); err != nil {
			return fmt.Errorf("create keys: %w", err)
		}
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
	signing := keys.NewCoalescer(backend, vault.MaxInFlight, vault.MaxBatch)
	cosigner, err := cosign.New(cosign.Config{Origin: cfg.LogOrigin, Name: cfg.CosignerName, Backend: backend, KeyName: cfg.LogKey, StateDir: cfg.StateDir,
		Registerer: d.Telemetry.Registry, Logger: d.Logger})
	if err != nil {
		return err
	}
	logKeys := func(ctx context.Context) ([]trustroot.LogKey, error) {
		vkey, err := cosigner.VerifierKey(ctx)
		if err != nil {
			return nil, err
		}
		return []trustroot.LogKey{{Origin: cfg.LogOrigin, VerifierKey: vkey}}, nil
	}
	events, catalog, closeEvents, err := openAudit(cfg, d)
	if err != nil {
		return err
	}
	defer closeEvents()
	purger, closePurge, err := openPurge(cfg, d, catalog)
	if err != nil {
		return err
	}
	defer closePurge()
	lc, err := openLifecycle(cfg, signing, chKeys, logKeys, events, purger, d.Logger)
	if err != nil {
		return err
	}
	if err := telemetry.RegisterPendingPurges(d.Telemetry.Registry, "signer", lc.PendingPurges); err != nil {
		return err
	}
	if v, err := lc.EnsureRoot(ctx); err != nil {
		d.Logger.Error("cannot publish a development trust root now; signing fails until it is", slog.Any("error", err))
	} else if v == 0 {
		d.Logger.Warn("no trust root is published: verifiers cannot check signatures until one is (custody trustroot draft/sign/publish, docs/trust-root.md)")
	}
	policy := server.Policy(d.TrustDomain)
	maps.Copy(policy, server.KeyWrapPolicy(d.TrustDomain))
	srv := d.NewServer(policy)
	signerSrv := server.New(signing, lc, d.Logger)
	if vkey, err := cosigner.VerifierKey(ctx); errors.Is(err, keys.ErrUnavailable) {
		d.Logger.Error("cannot read the log checkpoint key now; co-signing fails until the key back end is back", slog.Any("error", err))
	} else if err != nil {
		return fmt.Errorf("--log-key %s: %w", cfg.LogKey, err)
	} else {
		d.Logger.Info("co-signing log checkpoints", slog.String("origin", cfg.LogOrigin), slog.String("verifier_key", vkey))
	}
	signerSrv.SetCosigner(cosigner)
	approvalSvc, err := openApprovals(cfg, d, events)
	if err != nil {
		return err
	}
	signerSrv.SetApprovals(approvalSvc)
	if events != nil {
		signerSrv.SetSignatures(events)
	}
	signerv1.RegisterApprovalServiceServer(srv, approvals.NewHandler(approvalSvc, d.Logger))
	signerv1.RegisterSignerServiceServer(srv, signerSrv)
	signerv1.RegisterKeyServiceServer(srv, lifecycle.NewHandler(lc))
	if err := serveKeyWrap(ctx, cfg, backend, srv, d.Logger); err != nil {
		return err
	}
	return d.Serve(ctx, srv, func(ctx context.Context) error { return lc.Run(ctx, 5*time.Second) })
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

// channelKeys parses --channel-key CHANNEL=KEY values.
func channelKeys(vals []string) (map[string]string, error) {
	out := map[string]string{}
	var errs []error
	for _, v := range vals {
		ch, name, ok := strings.Cut(v, "=")
		switch {
		case !ok || ch == "" || !keys.ValidName(name):
			errs = append(errs, fmt.Errorf("--channel-key %q: want CHANNEL=KEY, KEY being 1-64 of a-z, 0-9, '-', '_'", v))
		case out[ch] != "":
			errs = append(errs, fmt.Errorf("--channel-key: channel %q given twice", ch))
		default:
			out[ch] = name
		}
	}
	return out, errors.Join(errs...)
}

// ensureChannelKeys creates missing channel keys (ECDSA P-256).
func ensureChannelKeys(ctx context.Context, b keys.Backend, chKeys map[string]string) error {
	for _, name := range chKeys {
		if err := server.EnsureKeys(ctx, b, server.Keys{Artifact: name}); err != nil {
			return err
		}
	}
	return nil
}

func openLifecycle(cfg config, b keys.Backend, chKeys map[string]string, logKeys func(context.Context) ([]trustroot.LogKey, error), events *audit.Catalog,
	purger func(context.Context, string, time.Time, string) (int, error), logger *slog.Logger) (*lifecycle.Manager, error) {
	lcfg := lifecycle.Config{LogKeys: logKeys, Purge: purger,
		Backend: b, ArtifactKey: cfg.ArtifactKey, ChannelKeys: chKeys, DecisionKey: cfg.DecisionKey, BackupKey: cfg.BackupKey,
		Dir: filepath.Join(cfg.StateDir, "keys"), Logger: logger, RootTTL: cfg.RootTTL, DevThreshold: cfg.DevThreshold,
	}
	for _, path := range cfg.EdgeTokenKeys {
		k, err := lifecycle.ParseEdgeTokenKey(path)
		if err != nil {
			return nil, fmt.Errorf("--edge-token-public-key-file: %w", err)
		}
		lcfg.EdgeTokenKeys = append(lcfg.EdgeTokenKeys, k)
	}
	for _, path := range cfg.DevRootKeys {
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--dev-root-key: %w", err)
		}
		s, err := trustroot.ParsePrivateKey(pem)
		if err != nil {
			return nil, fmt.Errorf("--dev-root-key %s: %w", path, err)
		}
		lcfg.DevRootKeys = append(lcfg.DevRootKeys, s)
	}
	if events != nil {
		lcfg.Audit = events
	}
	return lifecycle.Open(lcfg)
}

// approvals is the approval configuration of the flags, without clock and
// logger.
func (c *config) approvals() (approvals.Config, error) {
	quorum, err := approvals.ParseQuorum(c.Quorum)
	if err != nil {
		return approvals.Config{}, err
	}
	ids, err := approvals.ParseApprovers(c.Approvers)
	if err != nil {
		return approvals.Config{}, err
	}
	td, _ := spiffeid.TrustDomainFromString(c.TrustDomain) // checked by daemon.Config.Validate
	acfg := approvals.Config{Quorum: quorum, Approvers: ids, TrustDomain: td,
		ApprovalTTL: c.ApprovalTTL, RequestTTL: c.RequestTTL, MaxWait: c.ApprovalWait}
	if c.StateDir != "" {
		acfg.StateDir = filepath.Join(c.StateDir, "approvals")
	}
	return acfg, nil
}

// openAudit connects the audit log in the catalog; nil without
// --catalog-addr.
func openAudit(cfg config, d *daemon.Daemon) (*audit.Catalog, catalogv1.CatalogServiceClient, func(), error) {
	if cfg.CatalogAddr == "" {
		d.Logger.Warn("no --catalog-addr: key lifecycle events are not logged, and re-signing (ResignArtifact) is refused")
		return nil, nil, func() {}, nil
	}
	conn, err := d.Dial(cfg.CatalogAddr, "catalog")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("catalog: %w", err)
	}
	client := catalogv1.NewCatalogServiceClient(conn)
	return audit.New(client), client, func() { conn.Close() }, nil
}

// openPurge returns what asks the cdn-broker to purge a key revocation's
// artifacts; nil without --broker-addr (or without a catalog to ask).
func openPurge(cfg config, d *daemon.Daemon, catalog catalogv1.CatalogServiceClient) (func(context.Context, string, time.Time, string) (int, error), func(), error) {
	if cfg.BrokerAddr == "" || catalog == nil {
		d.Logger.Warn("no --broker-addr (or no --catalog-addr): a key revocation leaves its artifacts in edge and CDN caches until they expire; purge them with custody purge")
		return nil, func() {}, nil
	}
	conn, err := d.Dial(cfg.BrokerAddr, "cdn-broker")
	if err != nil {
		return nil, nil, fmt.Errorf("cdn-broker: %w", err)
	}
	p := &purge.KeyRevoked{Catalog: catalog, Broker: cdnbrokerv1.NewCdnBrokerServiceClient(conn)}
	return p.Purge, func() { conn.Close() }, nil
}

// openApprovals loads the approval state.
func openApprovals(cfg config, d *daemon.Daemon, events *audit.Catalog) (*approvals.Service, error) {
	acfg, err := cfg.approvals()
	if err != nil {
		return nil, err
	}
	acfg.Logger = d.Logger
	var logger approvals.Logger
	if events != nil {
		logger = events
	}
	svc, err := approvals.Open(acfg, logger)
	if err != nil {
		return nil, err
	}
	if acfg.Protected() {
		d.Logger.Info("approvals", slog.String("quorum", cfg.Quorum), slog.Int("approvers_listed", len(acfg.Approvers)))
	}
	return svc, nil
}
