package command

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"

	"github.com/custody-dev/custody/cli/internal/bundle"
	"github.com/custody-dev/custody/cli/internal/conn"
	libdigest "github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/verify"
)

func (c *cli) fetchCmd() *cobra.Command {
	var envName, out, bundlePath, clientIP string
	var asJSON, deploy bool
	var timeout time.Duration
	o := defaultFetchOptions
	cmd := &cobra.Command{
		Use:   "fetch NAME@VERSION --env E -o OUT [--deploy]",
		Short: "Admit, download through the edges (failover, resume), verify locally and write OUT atomically (as deployer)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) (rerr error) {
			if o.Rounds < 1 || o.Stall <= 0 || o.EdgeTimeout <= 0 || timeout <= 0 || o.Backoff < 0 || o.MaxBackoff < o.Backoff {
				return errors.New("fetch: --retries must be at least 1 and --stall-timeout, --edge-timeout, --timeout positive, --max-backoff at least --backoff")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			ref := args[0]
			// The fetch is one trace: this root span, the CLI's calls to
			// the gatekeeper, catalog and broker, and each edge request,
			// which carries it to the edge and on to the publisher.
			tel := c.telemetry()
			ctx, span := tel.TracerProvider.Tracer("custody/cli").Start(ctx, "custody fetch",
				trace.WithAttributes(attribute.String("custody.ref", ref), attribute.String("custody.environment", envName)))
			defer func() {
				if rerr != nil {
					span.SetStatus(codes.Error, "fetch failed")
				}
				span.End()
			}()
			name, version, _, err := parseRef(ref)
			if err != nil {
				return err
			}
			env, err := c.env(ctx, "deployer")
			if err != nil {
				return err
			}
			defer env.Close()
			dec, err := admit(ctx, env, ref, envName)
			if err != nil {
				return err
			}
			if dec.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
				c.printDecision(ref, envName, dec)
				return denied("fetch %s (%s): admission to %s denied: %s", ref, orUnknown(dec.GetDigest()), envName, strings.Join(dec.GetReasons(), "; "))
			}
			// By name and version when given: the same bytes may be
			// published under another name by another builder, and a
			// look-up by digest alone is then ambiguous.
			ev, trust, err := c.verifiedEvidence(ctx, env, name, version, dec.GetDigest())
			if err != nil {
				return fmt.Errorf("fetch %s: %w", ref, err)
			}
			urls, err := issueURLs(ctx, env, dec.GetDecisionEnvelope(), ev.Artifact.Digest, clientIP)
			if err != nil {
				return fmt.Errorf("fetch %s (%s): %w", ref, ev.Artifact.Digest, err)
			}
			roots, err := env.WebRoots()
			if err != nil {
				return err
			}
			client := newFetchClient(tracedTransport{tel: tel, base: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
				ResponseHeaderTimeout: o.Stall, TLSHandshakeTimeout: o.Stall}})
			res, terr := c.transfer(ctx, client, urls, ev.Artifact, out, o)
			span.SetAttributes(attribute.String("custody.digest", ev.Artifact.Digest))
			report := fetchReport{Ref: ref, Environment: envName, Digest: ev.Artifact.Digest, Size: ev.Artifact.Size, Output: out, transferResult: res, OK: terr == nil}
			if terr != nil {
				report.Error = terr.Error()
				if asJSON {
					_ = printJSON(c.stdout, report)
				}
				return denied("fetch %s (%s): %v", ref, ev.Artifact.Digest, terr)
			}
			if bundlePath != "" {
				if err := writeBundle(bundlePath, ev, trust); err != nil {
					return err
				}
				report.Bundle = bundlePath
			}
			if deploy {
				// Only verified bytes are reported deployed, under the
				// decision they were fetched with.
				d, err := recordDeployment(ctx, env, ref, envName, dec.GetDecisionEnvelope())
				if err != nil {
					return fmt.Errorf("fetched %s to %s, but %w: retry with custody deploy record", ref, out, err)
				}
				report.Deployment = d
			}
			if asJSON {
				return printJSON(c.stdout, report)
			}
			if report.Deployment != nil {
				defer c.printDeployment(report.Deployment, false)
			}
			how := ""
			if res.Resumed {
				how = ", resumed across " + strings.Join(res.Edges, ", ")
			}
			fmt.Fprintf(c.stdout, "fetched %s (%s, %d bytes) to %s from %d attempt(s)%s: digest, signature and log inclusion verified\n",
				ref, ev.Artifact.Digest, ev.Artifact.Size, out, len(res.Attempts), how)
			return nil
		},
	}
	cmd.Flags().StringVar(&envName, "env", "", "environment to deploy to (required)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "where to write the artifact (required)")
	cmd.Flags().StringVar(&bundlePath, "bundle", "", "also write the offline verification bundle here")
	cmd.Flags().StringVar(&clientIP, "client-ip", "", "bind the download URLs to this client address range (CIDR, e.g. 203.0.113.0/24): edges serve only clients in it")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result (every edge attempt) as JSON (docs/cli-json.md)")
	cmd.Flags().BoolVar(&deploy, "deploy", false, "after the verified fetch, record the deployment to --env under the allow decision")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "give up on the whole fetch after this long")
	cmd.Flags().IntVar(&o.Rounds, "retries", o.Rounds, "how many times to try the whole list of edges")
	cmd.Flags().DurationVar(&o.Backoff, "backoff", o.Backoff, "pause after the first failed round of edges (doubles, with jitter)")
	cmd.Flags().DurationVar(&o.MaxBackoff, "max-backoff", o.MaxBackoff, "longest pause between rounds")
	cmd.Flags().DurationVar(&o.Stall, "stall-timeout", o.Stall, "give up on an edge that sends no byte for this long")
	cmd.Flags().DurationVar(&o.EdgeTimeout, "edge-timeout", o.EdgeTimeout, "give up on one edge after this long (the next one resumes)")
	_ = cmd.MarkFlagRequired("env")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

// fetchReport is `custody fetch --json`'s answer (docs/cli-json.md).
type fetchReport struct {
	OK          bool   `json:"ok"`
	Ref         string `json:"ref"`
	Environment string `json:"environment"`
	Digest      string `json:"digest"`
	Size        int64  `json:"size"`
	Output      string `json:"output"`
	Bundle      string `json:"bundle,omitempty"`
	Error       string `json:"error,omitempty"`
	// Deployment is the deployment recorded with --deploy.
	Deployment *deployment `json:"deployment,omitempty"`
	*transferResult
}

func orUnknown(d string) string {
	if d == "" {
		return "digest unknown"
	}
	return d
}

// verifiedEvidence gets the catalog's evidence for name@version (or, with
// no name, for digest alone) and verifies it against the trust root,
// pinned and walked forward, which it returns too. The evidence must be for digest, the
// decision's. A failed verification is a denial.
func (c *cli) verifiedEvidence(ctx context.Context, env *conn.Env, name, version, digest string) (verify.Evidence, *conn.Trust, error) {
	trust, err := env.Trust(ctx)
	if err != nil {
		return verify.Evidence{}, nil, err
	}
	cc, err := env.Dial("catalog")
	if err != nil {
		return verify.Evidence{}, nil, err
	}
	defer cc.Close()
	req := &catalogv1.GetArtifactRequest{Name: name, Version: version}
	what := name + "@" + version
	if name == "" {
		req, what = &catalogv1.GetArtifactRequest{Digest: digest}, digest
	}
	resp, err := catalogv1.NewCatalogServiceClient(cc).GetArtifact(ctx, req)
	if err != nil {
		return verify.Evidence{}, nil, fmt.Errorf("get evidence for %s: %w", what, err)
	}
	ev := verify.FromProto(resp)
	if err := verify.Check(ev, trust.Root, verify.Options{Want: verify.Want{Name: name, Version: version, Digest: digest}}).Err(); err != nil {
		return ev, nil, denied("%v", err)
	}
	return ev, trust, nil
}

// issueURLs asks the broker for one URL per edge; each must be for digest.
func issueURLs(ctx context.Context, env *conn.Env, decision []byte, digest, clientIP string) ([]string, error) {
	cc, err := env.Dial("cdn-broker")
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	resp, err := cdnbrokerv1.NewCdnBrokerServiceClient(cc).IssueDownloadUrl(ctx, &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: decision, ClientIpRange: clientIP})
	if err != nil {
		return nil, fmt.Errorf("get a download URL: %w", err)
	}
	if len(resp.GetUrls()) == 0 {
		return nil, errors.New("the broker returned no URLs")
	}
	hexDigest, err := libdigest.Parse(digest)
	if err != nil {
		return nil, err
	}
	for _, u := range resp.GetUrls() {
		if !strings.HasSuffix(redactURL(u), "/v1/blobs/sha256/"+hexDigest) {
			return nil, fmt.Errorf("the broker returned %s, not a URL for %s", quote.Prefix(redactURL(u)), digest)
		}
	}
	return resp.GetUrls(), nil
}

type progressWriter struct{ p *progress }

func (w progressWriter) Write(b []byte) (int, error) { w.p.add(len(b)); return len(b), nil }

func writeBundle(path string, ev verify.Evidence, trust *conn.Trust) error {
	b, err := bundle.New(ev, trust.Chain, trust.Root.Version).Marshal()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func (c *cli) bundleCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "bundle NAME@VERSION -o BUNDLE",
		Short: "Write the offline verification bundle of an artifact",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			env, err := c.env(ctx, "deployer")
			if err != nil {
				return err
			}
			defer env.Close()
			name, version, digest, err := parseRef(args[0])
			if err != nil {
				return err
			}
			cc, err := env.Dial("catalog")
			if err != nil {
				return err
			}
			defer cc.Close()
			resp, err := catalogv1.NewCatalogServiceClient(cc).GetArtifact(ctx, &catalogv1.GetArtifactRequest{Name: name, Version: version, Digest: digest})
			if err != nil {
				return fmt.Errorf("get evidence for %s: %w", args[0], err)
			}
			trust, err := env.Trust(ctx)
			if err != nil {
				return err
			}
			ev := verify.FromProto(resp)
			if err := verify.Check(ev, trust.Root, verify.Options{Want: verify.Want{Name: name, Version: version, Digest: digest}}).Err(); err != nil {
				return denied("%v", err)
			}
			if err := writeBundle(out, ev, trust); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "wrote %s for %s (%s)\n", out, args[0], ev.Artifact.Digest)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "bundle file to write (required)")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}
