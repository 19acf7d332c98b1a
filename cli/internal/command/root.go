// Package command is the `custody` command line.
package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/cli/internal/conn"
	libdigest "github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/telemetry"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitDenied = 1 // a deny, a failed verification, a refused call
	ExitError  = 2 // usage or other errors
)

// exitError carries an exit code with an error already meant for the user.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func denied(format string, args ...any) error {
	return &exitError{code: ExitDenied, err: fmt.Errorf(format, args...)}
}

type cli struct {
	opts           conn.Options
	addrs          map[string]*string
	stdout, stderr io.Writer
	progress       bool
}

// Execute runs the command line and returns the process exit code.
func Execute(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, opts: conn.Options{Addrs: map[string]string{}}, addrs: map[string]*string{}}
	root := &cobra.Command{
		Use:           "custody",
		Short:         "Publish, sign, admit, distribute and verify artifacts with Custody",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&c.opts.DevDir, "dev-dir", getenv("CUSTODY_DEV_DIR"), "dev stack directory (env CUSTODY_DEV_DIR)")
	pf.StringVar(&c.opts.As, "as", "", "dev identity to act as: builder, builder2, alice, bob, carol, deployer, admin, auditor, security")
	pf.StringVar(&c.opts.SVIDDir, "svid-dir", getenv("CUSTODY_SVID_DIR"), "directory with svid.pem, svid_key.pem, bundle.pem (outside dev; or SPIFFE_ENDPOINT_SOCKET)")
	pf.StringVar(&c.opts.TrustDomain, "trust-domain", getenv("CUSTODY_TRUST_DOMAIN"), "trust domain (outside dev)")
	pf.StringVar(&c.opts.TrustRootFile, "trust-root", getenv("CUSTODY_TRUST_ROOT"), "pinned trust root, a signed DSSE envelope (default in dev: <dev-dir>/trust/root.json)")
	pf.StringVar(&c.opts.WebCAFile, "web-ca", "", "CA bundle for HTTPS to edges (default: the dev stack's, else the system's)")
	pf.BoolVar(&c.progress, "progress", false, "show progress even when stderr is not a terminal")
	for _, s := range []string{"signer", "publisher", "catalog", "gatekeeper", "cdn-broker"} {
		c.addrs[s] = pf.String(s+"-addr", "", s+" gRPC address (outside dev)")
	}
	root.AddCommand(c.devCmd(), c.publishCmd(), c.admitCmd(), c.fetchCmd(), c.bundleCmd(), c.verifyCmd(), c.debugCmd(), c.keysCmd(), c.approvalsCmd(), c.approveCmd(), c.rejectCmd())
	root.AddCommand(c.trustrootCmd(), c.logCmd(), c.storeCmd(), c.pauseCmd(), c.resumeCmd(), c.killswitchCmd(), c.rollbackCmd(), c.revokeCmd())
	root.AddCommand(c.purgeCmd())
	root.AddCommand(c.auditCmd(), c.inventoryCmd(), c.lineageCmd(), c.searchCmd(), c.sbomCmd())
	root.AddCommand(c.backupCmd(), c.restoreCmd())
	root.AddCommand(c.deployCmd())
	root.AddCommand(c.advisoriesCmd(), c.findingsCmd(), c.vexCmd())

	tel, err := newTelemetry(ctx, getenv)
	if err != nil {
		fmt.Fprintln(stderr, "custody:", err)
		return ExitError
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()
	c.opts.Telemetry = tel
	err = root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "custody:", message(err))
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return ExitError
}

// newTelemetry is the CLI's tracing: spans go where the OpenTelemetry
// environment says (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
// OTEL_EXPORTER_OTLP_ENDPOINT, the same forms as a service's
// --otlp-endpoint, over the OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, grpc by
// default) and to CUSTODY_TRACE_FILE; with neither, none are recorded but
// trace context is still passed on.
func newTelemetry(ctx context.Context, getenv func(string) string) (*telemetry.Telemetry, error) {
	endpoint, variable := telemetry.OTLPEndpointFromEnv(getenv)
	ins, err := telemetry.OTLPInsecureFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	proto, err := telemetry.OTLPProtocolFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	tel, err := telemetry.New(ctx, telemetry.Config{Service: "custody", TraceFile: getenv("CUSTODY_TRACE_FILE"), OTLPEndpoint: endpoint, OTLPProtocol: proto,
		OTLPInsecure: ins, OTLPSignalEndpoint: variable == telemetry.EnvOTLPTracesEndpoint})
	if err != nil {
		if variable != "" {
			return nil, fmt.Errorf("%s: %w", variable, err)
		}
		return nil, err
	}
	return tel, nil
}

func (c *cli) resolveAddrs() {
	for s, p := range c.addrs {
		c.opts.Addrs[s] = *p
	}
}

// message makes gRPC errors read as sentences.
func message(err error) string {
	var ee *exitError
	if errors.As(err, &ee) {
		err = ee.err
	}
	if st, ok := status.FromError(errors.Unwrap(err)); ok && errors.Unwrap(err) != nil {
		return strings.Replace(err.Error(), errors.Unwrap(err).Error(), st.Code().String()+": "+st.Message(), 1)
	}
	if st, ok := status.FromError(err); ok {
		return st.Code().String() + ": " + st.Message()
	}
	return err.Error()
}

// telemetry is the run's tracing (Execute sets it up; tests that build a
// cli directly get one that records nothing).
func (c *cli) telemetry() *telemetry.Telemetry {
	if c.opts.Telemetry == nil {
		c.opts.Telemetry = telemetry.Discard("custody")
	}
	return c.opts.Telemetry
}

// env opens the connection environment acting as defaultAs unless --as.
func (c *cli) env(ctx context.Context, defaultAs string) (*conn.Env, error) {
	c.resolveAddrs()
	return conn.Open(ctx, c.opts, defaultAs)
}

// parseRef splits "name@version" or returns a digest.
func parseRef(ref string) (name, version, digest string, err error) {
	if strings.HasPrefix(ref, libdigest.Prefix) {
		if _, err := libdigest.Parse(ref); err != nil {
			return "", "", "", err
		}
		return "", "", ref, nil
	}
	i := strings.LastIndex(ref, "@")
	if i <= 0 || i == len(ref)-1 {
		return "", "", "", fmt.Errorf("%q: want NAME@VERSION or sha256:DIGEST", quote.Prefix(ref))
	}
	return ref[:i], ref[i+1:], "", nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
