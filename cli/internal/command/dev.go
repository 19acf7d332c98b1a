package command

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/custody-dev/custody/cli/internal/devstack"
)

func (c *cli) devCmd() *cobra.Command {
	dev := &cobra.Command{Use: "dev", Short: "Run the development stack"}
	var dir, binDir, policyBundle, dryRunEnv string
	var hsm bool
	var progressTimeout, cosignRefresh, maxCheckpointAge, logHeadRefresh time.Duration
	var extraEdges []string
	var catalogSignerAddr string
	up := &cobra.Command{
		Use:   "up",
		Short: "Mint a dev trust domain and run every service until Ctrl-C or `custody dev down`",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				d, err := os.MkdirTemp("", "custody-dev-")
				if err != nil {
					return err
				}
				dir = d
			}
			if policyBundle != "" {
				abs, err := filepath.Abs(policyBundle)
				if err != nil {
					return fmt.Errorf("--policy-bundle: %w", err)
				}
				policyBundle = abs
			}
			for _, u := range extraEdges {
				if err := checkEdgeURL(u); err != nil {
					return fmt.Errorf("--extra-edge-url %q: %w", u, err)
				}
			}
			fmt.Fprintf(c.stdout, "starting the Custody dev stack in %s\n", dir)
			return devstack.Up(cmd.Context(), devstack.Layout{Dir: dir, HSM: hsm, PolicyBundle: policyBundle, DryRunEnv: dryRunEnv, UploadProgressTimeout: progressTimeout, ExtraEdgeURLs: extraEdges,
				CosignRefresh: cosignRefresh, MaxCheckpointAge: maxCheckpointAge, LogHeadRefresh: logHeadRefresh, CatalogSignerAddr: catalogSignerAddr}, devstack.Options{BinDir: binDir, Out: c.stdout})
		},
	}
	up.Flags().StringVar(&dir, "dir", "", "directory for keys, state and logs (default: a new temporary directory)")
	up.Flags().BoolVar(&hsm, "hsm", false, "keep the signer's keys and the publisher's KEK in a SoftHSM2 token (needs softhsm2: scripts/install-softhsm.sh)")
	up.Flags().StringVar(&policyBundle, "policy-bundle", "", "the gatekeeper's admission policy bundle, a directory or .tar.gz (default: the built-in policy; docs/policy.md)")
	up.Flags().StringVar(&dryRunEnv, "dry-run-env", "", "environments whose policy denials the gatekeeper only logs and reports as warnings, comma-separated (e.g. staging)")
	up.Flags().DurationVar(&progressTimeout, "upload-progress-timeout", 0,
		"the publisher's --upload-progress-timeout: an upload that sends nothing this long is aborted (default: the publisher's, 1m; at least 1s)")
	up.Flags().StringArrayVar(&extraEdges, "extra-edge-url", nil,
		"an edge base URL (https://host:port) the broker lists before the stack's two edges, e.g. an edge the stack does not run; repeatable")
	up.Flags().DurationVar(&cosignRefresh, "cosign-refresh", 0,
		"the catalog's --cosign-refresh: how often an idle log's checkpoint is co-signed again (default: the catalog's, 30s; at least 1s)")
	up.Flags().DurationVar(&maxCheckpointAge, "max-checkpoint-age", 0,
		"the gatekeeper's --max-checkpoint-age: admissions are denied while the log's newest co-signed checkpoint is older (default: the gatekeeper's, 5m)")
	up.Flags().DurationVar(&logHeadRefresh, "log-head-refresh", 0,
		"the gatekeeper's --log-head-refresh: how often it fetches the log's newest checkpoint (default: the gatekeeper's, 5s)")
	up.Flags().StringVar(&catalogSignerAddr, "catalog-signer-addr", "",
		"host:port the catalog reaches the signer at instead of the signer's own address, e.g. a proxy in front of it that a test cuts to freeze the log")
	up.Flags().StringVar(&binDir, "bin-dir", "", "directory with the service binaries (default: next to custody, then PATH)")

	down := &cobra.Command{
		Use:   "down",
		Short: "Stop a running dev stack",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			d, err := c.devDir(dir)
			if err != nil {
				return err
			}
			if err := devstack.Down(devstack.Layout{Dir: d}); err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, "dev stack stopped")
			return nil
		},
	}
	down.Flags().StringVar(&dir, "dir", "", "the stack's directory (default: --dev-dir)")

	status := &cobra.Command{
		Use:   "status",
		Short: "Show the health of each service of a running dev stack",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := c.devDir(dir)
			if err != nil {
				return err
			}
			c.opts.DevDir = d
			return c.status(cmd.Context())
		},
	}
	status.Flags().StringVar(&dir, "dir", "", "the stack's directory (default: --dev-dir)")
	dev.AddCommand(up, down, status)
	return dev
}

func (c *cli) devDir(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	if c.opts.DevDir != "" {
		return c.opts.DevDir, nil
	}
	return "", fmt.Errorf("which stack? pass --dir or --dev-dir, or set CUSTODY_DEV_DIR")
}

func (c *cli) status(ctx context.Context) error {
	env, err := c.env(ctx, "admin")
	if err != nil {
		return err
	}
	defer env.Close()
	unhealthy := 0
	for _, s := range devstack.Services {
		state := "SERVING"
		conn, err := env.Dial(s.Name)
		if err == nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			var resp *healthpb.HealthCheckResponse
			resp, err = healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
			cancel()
			conn.Close()
			if err == nil {
				state = resp.GetStatus().String()
			}
		}
		if err != nil {
			state = "DOWN: " + message(err)
		}
		if state != "SERVING" {
			unhealthy++
		}
		addr, _ := env.Addr(s.Name)
		fmt.Fprintf(c.stdout, "%-11s %-21s %s  %s\n", s.Name, addr, state, spiffeid.RequireFromPath(env.TD, s.IDPath))
	}
	if unhealthy > 0 {
		return denied("%d service(s) not serving", unhealthy)
	}
	return nil
}

// checkEdgeURL accepts an edge base URL the way the broker's --edge-url
// does: https with a host, and nothing after the host but an optional
// "/" (the broker appends the blob path and the token).
func checkEdgeURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("want https://host[:port]: the download token travels in the URL and must never go over plain HTTP")
	}
	return nil
}
