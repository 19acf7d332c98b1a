// Command gatekeeper serves Custody's admission decisions: it verifies an
// artifact's evidence, evaluates the Rego admission policy, and returns a
// signed, logged decision.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/custody-dev/custody/libs/daemon"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
	"github.com/custody-dev/custody/services/gatekeeper/internal/finding"
	"github.com/custody-dev/custody/services/gatekeeper/internal/loghead"
	"github.com/custody-dev/custody/services/gatekeeper/internal/policy"
	"github.com/custody-dev/custody/services/gatekeeper/internal/purge"
	"github.com/custody-dev/custody/services/gatekeeper/internal/remote"
	"github.com/custody-dev/custody/services/gatekeeper/internal/rollback"
	"github.com/custody-dev/custody/services/gatekeeper/internal/server"
	"github.com/custody-dev/custody/services/gatekeeper/internal/stop"
	defaultpolicy "github.com/custody-dev/custody/services/gatekeeper/policy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gatekeeper:", err)
		os.Exit(1)
	}
}

// config is the gatekeeper's configuration.
type config struct {
	daemon.Config
	CatalogAddr            string
	BrokerAddr             string
	SignerAddr             string
	PublisherAddr          string
	TrustRootFile          string
	AcceptBeforeRevocation bool
	PolicyBundle           string
	PolicyBundleKey        string
	PolicyBundleKeyAlg     string
	DryRunEnvs             string
	StopStateFile          string
	LiftQuorum             string
	DefaultLiftQuorum      int
	KillSwitchLiftQuorum   int
	DeploymentMaxAge       time.Duration
	RollbackRule           bool
	RollbackStateFile      string
	RollbackQuorum         int
	RollbackTTL            time.Duration
	FindingStateFile       string
	FindingRetention       time.Duration
	// MaxCheckpointAge is the oldest cosignature of the log's head an
	// admission accepts (ATTACKS.md #14); zero: not checked.
	MaxCheckpointAge time.Duration
	// LogHeadRefresh is how often the log's head is fetched.
	LogHeadRefresh time.Duration
	// LogHeadFile keeps the log's head across restarts.
	LogHeadFile string
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	cfg := &config{Config: daemon.Config{Service: "gatekeeper"}}
	f := daemon.NewFlags("gatekeeper", getenv)
	f.SetOutput(stderr)
	cfg.RegisterFlags(f)
	f.String(&cfg.BrokerAddr, "broker-addr", "CUSTODY_BROKER_ADDR", "", "cdn-broker gRPC address: the kill switch purges every deployed artifact from every cache (empty: caches are left to expire)")
	f.String(&cfg.CatalogAddr, "catalog-addr", "CUSTODY_CATALOG_ADDR", "", "catalog gRPC address, host:port")
	f.String(&cfg.SignerAddr, "signer-addr", "CUSTODY_SIGNER_ADDR", "", "signer gRPC address, host:port")
	f.String(&cfg.PublisherAddr, "publisher-addr", "CUSTODY_PUBLISHER_ADDR", "", "publisher gRPC address, host:port")
	f.String(&cfg.TrustRootFile, "trust-root", "CUSTODY_TRUST_ROOT", "",
		"the pinned trust root: a DSSE envelope signed by its root keys (e.g. `custody dev` trust/root.json); newer versions are fetched from the signer")
	f.Bool(&cfg.AcceptBeforeRevocation, "accept-before-revocation", "CUSTODY_ACCEPT_BEFORE_REVOCATION", false,
		"let signatures by a revoked key version stand if the log recorded them before the revocation time (default: deny them all)")
	f.String(&cfg.PolicyBundle, "policy-bundle", "CUSTODY_POLICY_BUNDLE", "",
		"OPA bundle of the admission policy: a directory or a .tar.gz with a .manifest naming its revision and Rego of package custody.admission (default: the built-in bundle, services/gatekeeper/policy; docs/policy.md)")
	f.String(&cfg.PolicyBundleKey, "policy-bundle-key", "CUSTODY_POLICY_BUNDLE_KEY", "",
		"PEM public key that must have signed the policy bundle (.signatures.json, as `opa build --signing-key` writes it); unset: the bundle must be unsigned")
	f.String(&cfg.PolicyBundleKeyAlg, "policy-bundle-key-alg", "CUSTODY_POLICY_BUNDLE_KEY_ALG", "ES256",
		"JWS algorithm of the bundle signature: ES256, ES384, ES512, RS256, RS384, RS512, PS256, PS384, PS512 or EdDSA")
	f.String(&cfg.DryRunEnvs, "dry-run-env", "CUSTODY_DRY_RUN_ENV", "",
		"environments in dry-run mode, comma-separated (e.g. staging): the policy's denials there are logged and the admission allowed with warnings; verification failures, stops and the rollback rule still deny (decision 0100)")
	f.String(&cfg.StopStateFile, "stop-state-file", "CUSTODY_STOP_STATE_FILE", "",
		"durable pause and kill-switch state (a JSON file, created if missing; keep it on persistent storage)")
	f.String(&cfg.LiftQuorum, "lift-quorum", "CUSTODY_LIFT_QUORUM", "",
		"distinct admins or approvers needed to lift a pause, by environment, e.g. prod=2,staging=1")
	f.Int(&cfg.DefaultLiftQuorum, "default-lift-quorum", "CUSTODY_DEFAULT_LIFT_QUORUM", 2, "approvals to lift a pause of an environment not in --lift-quorum")
	f.Int(&cfg.KillSwitchLiftQuorum, "killswitch-lift-quorum", "CUSTODY_KILLSWITCH_LIFT_QUORUM", 2, "approvals to lift the kill switch")
	f.Duration(&cfg.DeploymentMaxAge, "deployment-max-age", "CUSTODY_DEPLOYMENT_MAX_AGE", admission.DefaultDeploymentMaxAge,
		"oldest allow decision a deployment may be reported under (RecordDeployment)")
	f.Bool(&cfg.RollbackRule, "rollback-rule", "CUSTODY_ROLLBACK_RULE", true,
		"deny admitting a lower version of a name than the highest deployed to the environment unless a rollback approval is granted (decision 0078; custody rollback request|approve)")
	f.String(&cfg.RollbackStateFile, "rollback-state-file", "CUSTODY_ROLLBACK_STATE_FILE", "",
		"durable rollback approvals (a JSON file, created if missing; default rollbacks.json next to --stop-state-file)")
	f.Int(&cfg.RollbackQuorum, "rollback-quorum", "CUSTODY_ROLLBACK_QUORUM", 2,
		"distinct admins or approvers, not counting the requester, needed to grant a rollback")
	f.Duration(&cfg.RollbackTTL, "rollback-ttl", "CUSTODY_ROLLBACK_TTL", 24*time.Hour,
		"how long a rollback request, and the rollback it grants, stays valid (at most 168h)")
	f.String(&cfg.FindingStateFile, "finding-state-file", "CUSTODY_FINDING_STATE_FILE", "",
		"durable advisory re-evaluation state: log position, admitted and deployed artifacts, findings raised (a JSON file, created if missing; default findings.json next to --stop-state-file)")
	f.Duration(&cfg.FindingRetention, "finding-epoch-retention", "CUSTODY_FINDING_EPOCH_RETENTION", finding.DefaultRetention,
		"how long a finding's epoch is sent to the broker and edges: more than the longest a decision (broker --decision-max-age) plus a token (edge --token-max-lifetime, at most 24h) can be used")
	f.Duration(&cfg.MaxCheckpointAge, "max-checkpoint-age", "CUSTODY_MAX_CHECKPOINT_AGE", loghead.DefaultMaxAge,
		"deny every admission while the newest log checkpoint the catalog serves was co-signed longer ago than this (a frozen log, ATTACKS.md #14); keep it well above the catalog's --cosign-refresh; 0 turns the check off (logged as a warning)")
	f.Duration(&cfg.LogHeadRefresh, "log-head-refresh", "CUSTODY_LOG_HEAD_REFRESH", loghead.DefaultRefresh,
		"how often the gatekeeper fetches the catalog's newest co-signed checkpoint and proves it extends the one it holds")
	f.String(&cfg.LogHeadFile, "log-head-file", "CUSTODY_LOG_HEAD_FILE", "",
		"the log checkpoint the gatekeeper holds as the log's head, kept across restarts so that a fork or a rolled-back catalog is caught after a restart too (default log-head.note next to --stop-state-file; remove it only after restoring the catalog from a backup or a log key change, see docs/runbooks/log-checkpoint-stale.md)")
	if err := f.Parse(args); err != nil {
		return nil, err
	}
	if cfg.LogHeadFile == "" && cfg.StopStateFile != "" {
		cfg.LogHeadFile = filepath.Join(filepath.Dir(cfg.StopStateFile), "log-head.note")
	}
	if cfg.RollbackStateFile == "" && cfg.StopStateFile != "" {
		cfg.RollbackStateFile = filepath.Join(filepath.Dir(cfg.StopStateFile), "rollbacks.json")
	}
	if cfg.FindingStateFile == "" && cfg.StopStateFile != "" {
		cfg.FindingStateFile = filepath.Join(filepath.Dir(cfg.StopStateFile), "findings.json")
	}
	return cfg, nil
}

// Validate returns every problem at once. It reads the key file and
// compiles the policy file to check them.
func (c *config) Validate() error {
	errs := []error{c.Config.Validate()}
	for _, a := range []struct{ flag, value string }{
		{"--catalog-addr", c.CatalogAddr}, {"--signer-addr", c.SignerAddr}, {"--publisher-addr", c.PublisherAddr},
	} {
		if a.value == "" {
			errs = append(errs, fmt.Errorf("%s is required", a.flag))
		}
	}
	if c.StopStateFile == "" {
		errs = append(errs, errors.New("--stop-state-file is required (where pauses and the kill switch survive restarts)"))
	}
	if _, err := parseQuorum(c.LiftQuorum); err != nil {
		errs = append(errs, err)
	}
	if c.DefaultLiftQuorum < 1 || c.KillSwitchLiftQuorum < 1 {
		errs = append(errs, errors.New("--default-lift-quorum and --killswitch-lift-quorum must be at least 1"))
	}
	if c.RollbackQuorum < 1 {
		errs = append(errs, errors.New("--rollback-quorum must be at least 1"))
	}
	if c.RollbackTTL <= 0 || c.RollbackTTL > rollback.MaxTTL {
		errs = append(errs, fmt.Errorf("--rollback-ttl %s: must be positive and at most %s", c.RollbackTTL, rollback.MaxTTL))
	}
	if c.FindingRetention < time.Hour {
		errs = append(errs, fmt.Errorf("--finding-epoch-retention %s: want at least 1h (longer than any decision plus token lifetime)", c.FindingRetention))
	}
	if c.MaxCheckpointAge < 0 {
		errs = append(errs, fmt.Errorf("--max-checkpoint-age %s: want a positive duration, or 0 to turn the check off", c.MaxCheckpointAge))
	}
	if c.LogHeadRefresh <= 0 {
		errs = append(errs, fmt.Errorf("--log-head-refresh %s: must be positive", c.LogHeadRefresh))
	} else if c.MaxCheckpointAge > 0 && c.LogHeadRefresh >= c.MaxCheckpointAge {
		errs = append(errs, fmt.Errorf("--log-head-refresh %s must be shorter than --max-checkpoint-age %s", c.LogHeadRefresh, c.MaxCheckpointAge))
	}
	if c.DeploymentMaxAge <= 0 {
		errs = append(errs, fmt.Errorf("--deployment-max-age %s: must be positive", c.DeploymentMaxAge))
	}
	if c.TrustRootFile == "" {
		errs = append(errs, errors.New("--trust-root is required (the pinned trust root, e.g. `custody dev` trust/root.json)"))
	} else if _, err := c.trustRoot(); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseEnvs(c.DryRunEnvs); err != nil {
		errs = append(errs, err)
	}
	if c.PolicyBundle != "" || c.PolicyBundleKey != "" {
		if _, err := c.policy(context.Background()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// parseEnvs reads env,env.
func parseEnvs(s string) ([]string, error) {
	var out []string
	for _, env := range strings.Split(s, ",") {
		env = strings.TrimSpace(env)
		if env == "" {
			continue
		}
		if !admission.ValidEnvironment(env) {
			return nil, fmt.Errorf("--dry-run-env %q: want environment names like staging, comma-separated", env)
		}
		if !slices.Contains(out, env) {
			out = append(out, env)
		}
	}
	return out, nil
}

// parseQuorum reads env=k,env=k.
func parseQuorum(s string) (map[string]int, error) {
	out := map[string]int{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		env, k, ok := strings.Cut(strings.TrimSpace(kv), "=")
		n, err := strconv.Atoi(k)
		if !ok || err != nil || n < 1 || !admission.ValidEnvironment(env) {
			return nil, fmt.Errorf("--lift-quorum %q: want env=k with k at least 1, e.g. prod=2,staging=1", kv)
		}
		if _, dup := out[env]; dup {
			return nil, fmt.Errorf("--lift-quorum: %s given twice", env)
		}
		out[env] = n
	}
	return out, nil
}

// trustRoot reads and pins the trust root file: it must be signed by its
// own threshold of root keys. It may have expired: the signer may have
// newer versions.
func (c *config) trustRoot() (*trustroot.Trusted, error) {
	return trustroot.PinFile("--trust-root", c.TrustRootFile)
}

// policy loads and compiles the policy bundle: --policy-bundle, checked
// against --policy-bundle-key if given, or the built-in one.
func (c *config) policy(ctx context.Context) (*policy.Policy, error) {
	if c.PolicyBundle == "" {
		if c.PolicyBundleKey != "" {
			return nil, errors.New("--policy-bundle-key needs --policy-bundle: the built-in policy is part of the binary and carries no signature")
		}
		return policy.LoadBundleFS(ctx, defaultpolicy.BundleName, defaultpolicy.Bundle(), policy.BundleOptions{})
	}
	opts := policy.BundleOptions{Algorithm: c.PolicyBundleKeyAlg}
	if c.PolicyBundleKey != "" {
		b, err := os.ReadFile(c.PolicyBundleKey)
		if err != nil {
			return nil, fmt.Errorf("--policy-bundle-key: %w", err)
		}
		opts.PublicKey = b
	}
	p, err := policy.LoadBundle(ctx, c.PolicyBundle, opts)
	if err != nil {
		return nil, fmt.Errorf("--policy-bundle: %w", err)
	}
	return p, nil
}

// reloadPolicy reloads the policy bundle (load) on every signal from hup
// (SIGHUP). A bundle that loads is put in force for the admissions that
// start after it; one that does not is logged and the policy in force
// stays: it was checked when it was loaded, and every decision names the
// revision and digest it was made under.
func reloadPolicy(hup <-chan os.Signal, load func(context.Context) (*policy.Policy, error), gate *admission.Gate, logger *slog.Logger) daemon.Component {
	return func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
			}
			old := gate.Policy()
			p, err := load(ctx)
			if err != nil {
				logger.Error("admission policy bundle reload failed: the policy in force stays; fix the bundle and send SIGHUP again",
					slog.String("revision", old.Revision()), slog.String("digest", old.Digest()), slog.Any("error", err))
				continue
			}
			gate.SetPolicy(p)
			logger.Info("admission policy bundle reloaded", slog.String("policy", p.Name()), slog.String("revision", p.Revision()),
				slog.String("digest", p.Digest()), slog.String("previous_revision", old.Revision()), slog.String("previous_digest", old.Digest()))
		}
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	trusted, err := cfg.trustRoot()
	if err != nil {
		return err
	}
	pol, err := cfg.policy(ctx)
	if err != nil {
		return err
	}
	dryRun, err := parseEnvs(cfg.DryRunEnvs)
	if err != nil {
		return err
	}

	d, err := daemon.Start(ctx, cfg.Config, stderr)
	if err != nil {
		return err
	}
	defer d.Close()
	d.Logger.Info("admission policy bundle loaded", slog.String("policy", pol.Name()), slog.String("revision", pol.Revision()), slog.String("digest", pol.Digest()))
	if len(dryRun) > 0 {
		d.Logger.Warn("dry-run: the policy's denials in these environments are logged and admitted with warnings", slog.Any("environments", dryRun))
	}

	svid, err := d.Source.GetX509SVID()
	if err != nil {
		return fmt.Errorf("get own SVID: %w", err)
	}
	catalogConn, err := d.Dial(cfg.CatalogAddr, "catalog")
	if err != nil {
		return err
	}
	defer catalogConn.Close()
	signerConn, err := d.Dial(cfg.SignerAddr, "signer")
	if err != nil {
		return err
	}
	defer signerConn.Close()
	publisherConn, err := d.Dial(cfg.PublisherAddr, "publisher")
	if err != nil {
		return err
	}
	defer publisherConn.Close()

	catalog := remote.NewCatalog(catalogv1.NewCatalogServiceClient(catalogConn))
	quorum, err := parseQuorum(cfg.LiftQuorum)
	if err != nil {
		return err
	}
	stops, err := stop.Open(stop.Config{
		File: cfg.StopStateFile, Quorum: quorum, DefaultQuorum: cfg.DefaultLiftQuorum, KillSwitchQuorum: cfg.KillSwitchLiftQuorum,
		Log: catalog, Logger: d.Logger, Registry: d.Telemetry.Registry,
		// Revocations are listed as long as finding epochs: past it no
		// decision or token issued before them can still be used.
		RevocationRetention: cfg.FindingRetention,
	})
	if err != nil {
		return err
	}
	if st := stops.State(); st.KillSwitch.Active {
		d.Logger.Warn("the kill switch is ON: every admission is denied", slog.String("reason", st.KillSwitch.Reason))
	}
	rollbacks, err := rollback.Open(rollback.Config{
		File: cfg.RollbackStateFile, Quorum: cfg.RollbackQuorum, TTL: cfg.RollbackTTL, Log: catalog, Logger: d.Logger,
	})
	if err != nil {
		return err
	}
	var gate *admission.Gate
	head, err := loghead.New(loghead.Config{
		Source: catalog, Root: func() (*trustroot.Root, error) { return gate.TrustRoot() },
		MaxAge: cfg.MaxCheckpointAge, Refresh: cfg.LogHeadRefresh, File: cfg.LogHeadFile,
		Registerer: d.Telemetry.Registry, Logger: d.Logger,
	})
	if err != nil {
		return err
	}
	if cfg.MaxCheckpointAge == 0 {
		d.Logger.Warn("--max-checkpoint-age 0: admissions do not check that the log is fresh; a frozen log (one no longer co-signed, or a withheld view) goes unnoticed")
	}
	acfg := admission.Config{
		Stops:                  stops,
		LogHead:                head,
		Catalog:                catalog,
		SBOMs:                  catalog,
		Advisories:             catalog,
		VEX:                    catalog,
		Signer:                 remote.NewSigner(signerv1.NewSignerServiceClient(signerConn), d.Logger),
		Publisher:              remote.NewPublisher(publisherv1.NewPublisherServiceClient(publisherConn)),
		Policy:                 pol,
		DryRun:                 dryRun,
		TrustRoot:              trusted,
		AcceptBeforeRevocation: cfg.AcceptBeforeRevocation,
		DeploymentMaxAge:       cfg.DeploymentMaxAge,
		VerifierID:             svid.ID.String(),
		TrustDomain:            d.TrustDomain.Name(),
		Metrics:                d.Telemetry.Metrics,
		Logger:                 d.Logger,
	}
	if cfg.RollbackRule {
		acfg.Rollbacks, acfg.Deployments = rollbacks, catalog
	}
	gate, err = admission.New(acfg)
	if err != nil {
		return err
	}
	// Walk forward from the pinned root before serving. With the signer
	// down the pinned root is used: it is signed, and Current refuses it
	// once it expires.
	if err := gate.RefreshTrust(ctx); err != nil {
		d.Logger.Warn("trust refresh at start failed: using the trust root reached so far", slog.Int64("version", gate.TrustVersion()), slog.Any("error", err))
	}
	d.Logger.Info("trust root loaded", slog.Int64("version", gate.TrustVersion()))

	findings, err := finding.Open(finding.Config{
		File: cfg.FindingStateFile, Log: catalog, Events: catalog, Evaluator: gate, TrustDomain: d.TrustDomain,
		// The entries are proved against checkpoints that open with the
		// trust root's log key and that the admissions' log head holds
		// consistent (decision 0119).
		Root: gate.TrustRoot, Head: head,
		Retention: cfg.FindingRetention, Logger: d.Logger, Registry: d.Telemetry.Registry,
	})
	if err != nil {
		return err
	}

	srv := d.NewServer(server.Policy(d.TrustDomain), func(c *rpc.ServerConfig) { c.StreamWorkers = server.StreamWorkers })
	gk := server.New(gate, d.Logger).WithStops(stops, gate).WithRollbacks(rollbacks).WithFindings(findings)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	runners := []daemon.Component{gate.RunTrustRefresh, gate.RunRevocationWatch, head.Run, reloadPolicy(hup, cfg.policy, gate, d.Logger), findings.Run}
	if cfg.BrokerAddr != "" {
		brokerConn, err := d.Dial(cfg.BrokerAddr, "cdn-broker")
		if err != nil {
			return err
		}
		defer brokerConn.Close()
		q, err := purge.Open(cfg.StopStateFile+".purges.json", catalogv1.NewCatalogServiceClient(catalogConn), cdnbrokerv1.NewCdnBrokerServiceClient(brokerConn), d.Logger)
		if err != nil {
			return err
		}
		gk.WithPurges(q)
		if err := telemetry.RegisterPendingPurges(d.Telemetry.Registry, "gatekeeper", q.Pending); err != nil {
			return err
		}
		runners = append(runners, func(ctx context.Context) error { return q.Run(ctx, purge.Clock{}) })
	} else {
		d.Logger.Warn("no --broker-addr: the kill switch and artifact revocations leave artifacts in edge and CDN caches until they expire")
	}
	gatekeeperv1.RegisterGatekeeperServiceServer(srv, gk)
	return d.Serve(ctx, srv, runners...)
}
