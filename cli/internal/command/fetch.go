package command

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"

	"github.com/custody-dev/custody/cli/internal/bundle"
	"github.com/custody-dev/custody/cli/internal/conn"
	"github.com/custody-dev/custody/cli/internal/evidence"
	libdigest "github.com/custody-dev/custody/libs/digest"
)

func (c *cli) fetchCmd() *cobra.Command {
	var envName, out, bundlePath string
	var deploy bool
	cmd := &cobra.Command{
		Use:   "fetch NAME@VERSION --env E -o OUT [--deploy]",
		Short: "Admit, download through an edge, verify locally and write OUT atomically (as deployer)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			env, err := c.env(ctx, "deployer")
			if err != nil {
				return err
			}
			defer env.Close()
			dec, err := admit(ctx, env, args[0], envName)
			if err != nil {
				return err
			}
			if dec.GetDecision() != gatekeeperv1.Decision_DECISION_ALLOW {
				c.printDecision(args[0], envName, dec)
				return denied("fetch %s (%s): admission to %s denied: %s", args[0], orUnknown(dec.GetDigest()), envName, strings.Join(dec.GetReasons(), "; "))
			}
			ev, trust, err := c.evidence(ctx, env, dec.GetDigest())
			if err != nil {
				return err
			}
			if err := evidence.Verify(ev, trust.Root); err != nil {
				return denied("fetch %s: %v", args[0], err)
			}
			urls, err := issueURLs(ctx, env, dec.GetDecisionEnvelope())
			if err != nil {
				return fmt.Errorf("fetch %s (%s): %w", args[0], ev.Artifact.Digest, err)
			}
			roots, err := env.WebRoots()
			if err != nil {
				return err
			}
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
			var failures []string
			for _, u := range urls {
				err := c.download(ctx, client, u, ev.Artifact, out)
				if err == nil {
					fmt.Fprintf(c.stdout, "fetched %s (%s, %d bytes) to %s: digest, signature and log inclusion verified\n", args[0], ev.Artifact.Digest, ev.Artifact.Size, out)
					if bundlePath != "" {
						if err := writeBundle(bundlePath, ev, trust); err != nil {
							return err
						}
					}
					if !deploy {
						return nil
					}
					// Only verified bytes are reported deployed, under the
					// decision they were fetched with.
					d, err := recordDeployment(ctx, env, args[0], envName, dec.GetDecisionEnvelope())
					if err != nil {
						return fmt.Errorf("fetched %s to %s, but %w: retry with custody deploy record", args[0], out, err)
					}
					return c.printDeployment(d, false)
				}
				failures = append(failures, err.Error())
			}
			return denied("fetch %s (%s): no edge served the right bytes: %s", args[0], ev.Artifact.Digest, strings.Join(failures, "; "))
		},
	}
	cmd.Flags().StringVar(&envName, "env", "", "environment to deploy to (required)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "where to write the artifact (required)")
	cmd.Flags().StringVar(&bundlePath, "bundle", "", "also write the offline verification bundle here")
	cmd.Flags().BoolVar(&deploy, "deploy", false, "after the verified fetch, record the deployment to --env under the allow decision")
	_ = cmd.MarkFlagRequired("env")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

func orUnknown(d string) string {
	if d == "" {
		return "digest unknown"
	}
	return d
}

// evidence gets the catalog's evidence for digest and the trust root,
// pinned and walked forward.
func (c *cli) evidence(ctx context.Context, env *conn.Env, digest string) (evidence.Evidence, *conn.Trust, error) {
	trust, err := env.Trust(ctx)
	if err != nil {
		return evidence.Evidence{}, nil, err
	}
	cc, err := env.Dial("catalog")
	if err != nil {
		return evidence.Evidence{}, nil, err
	}
	defer cc.Close()
	resp, err := catalogv1.NewCatalogServiceClient(cc).GetArtifact(ctx, &catalogv1.GetArtifactRequest{Digest: digest})
	if err != nil {
		return evidence.Evidence{}, nil, fmt.Errorf("get evidence for %s: %w", digest, err)
	}
	ev := evidence.FromProto(resp)
	if ev.Artifact.Digest != digest {
		return ev, nil, denied("the catalog answered with %s for %s", ev.Artifact.Digest, digest)
	}
	return ev, trust, nil
}

func issueURLs(ctx context.Context, env *conn.Env, decision []byte) ([]string, error) {
	cc, err := env.Dial("cdn-broker")
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	resp, err := cdnbrokerv1.NewCdnBrokerServiceClient(cc).IssueDownloadUrl(ctx, &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: decision})
	if err != nil {
		return nil, fmt.Errorf("get a download URL: %w", err)
	}
	if len(resp.GetUrls()) == 0 {
		return nil, errors.New("the broker returned no URLs")
	}
	return resp.GetUrls(), nil
}

// download fetches u into a temporary file beside out, reading at most one
// byte more than the recorded size, and renames it to out only if size and
// digest match. Nothing is left at out on failure.
func (c *cli) download(ctx context.Context, client *http.Client, u string, a evidence.Artifact, out string) error {
	where := strings.SplitN(u, "?", 2)[0]
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %v", where, strings.ReplaceAll(err.Error(), u, where))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("%s: %s: %s", where, resp.Status, strings.TrimSpace(string(body)))
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".part*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	p := c.newProgress("downloaded", a.Size)
	n, err := io.Copy(io.MultiWriter(tmp, h, progressWriter{p}), io.LimitReader(resp.Body, a.Size+1))
	p.finish()
	if err != nil {
		return fmt.Errorf("%s: download: %v", where, err)
	}
	if n != a.Size {
		return fmt.Errorf("%s: integrity failure for %s: served %d bytes, recorded size is %d", where, a.Digest, n, a.Size)
	}
	if got := libdigest.FromSum(h.Sum(nil)); got != a.Digest {
		return fmt.Errorf("%s: integrity failure for %s: served bytes hash to %s", where, a.Digest, got)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

type progressWriter struct{ p *progress }

func (w progressWriter) Write(b []byte) (int, error) { w.p.add(len(b)); return len(b), nil }

func writeBundle(path string, ev evidence.Evidence, trust *conn.Trust) error {
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
			ev := evidence.FromProto(resp)
			if err := evidence.Verify(ev, trust.Root); err != nil {
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
