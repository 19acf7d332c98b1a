package command

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
)

// purgeJob is one job in --json output (docs/cli-json.md, "purge").
type purgeJob struct {
	ID          string        `json:"id"`
	Digest      string        `json:"digest"`
	Reason      string        `json:"reason"`
	Reference   string        `json:"reference"`
	RequestedBy string        `json:"requested_by"`
	RequestedAt string        `json:"requested_at"`
	Done        bool          `json:"done"`
	Targets     []purgeTarget `json:"targets"`
}

type purgeTarget struct {
	Name          string `json:"name"`
	Confirmed     bool   `json:"confirmed"`
	Attempts      uint32 `json:"attempts"`
	LastError     string `json:"last_error,omitempty"`
	NextAttemptAt string `json:"next_attempt_at,omitempty"`
}

func purgeJobs(in []*cdnbrokerv1.PurgeJob) []purgeJob {
	out := []purgeJob{}
	for _, j := range in {
		p := purgeJob{ID: j.GetId(), Digest: j.GetDigest(), Reason: j.GetReason(), Reference: j.GetReference(), RequestedBy: j.GetRequestedBy(),
			RequestedAt: j.GetRequestedAt().AsTime().UTC().Format(time.RFC3339), Done: j.GetDone(), Targets: []purgeTarget{}}
		for _, t := range j.GetTargets() {
			pt := purgeTarget{Name: t.GetName(), Confirmed: t.GetConfirmed(), Attempts: t.GetAttempts(), LastError: t.GetLastError()}
			if t.GetNextAttemptAt() != nil {
				pt.NextAttemptAt = t.GetNextAttemptAt().AsTime().UTC().Format(time.RFC3339)
			}
			p.Targets = append(p.Targets, pt)
		}
		out = append(out, p)
	}
	return out
}

func (c *cli) printPurgeJobs(jobs []purgeJob, asJSON bool) error {
	if asJSON {
		if jobs == nil {
			jobs = []purgeJob{}
		}
		return printJSON(c.stdout, map[string]any{"jobs": jobs})
	}
	if len(jobs) == 0 {
		fmt.Fprintln(c.stdout, "no purge jobs")
	}
	for _, j := range jobs {
		state := "pending"
		if j.Done {
			state = "done"
		}
		fmt.Fprintf(c.stdout, "%s  %s  %s  %s (%s) by %s at %s\n", j.ID, j.Digest, state, j.Reason, j.Reference, j.RequestedBy, j.RequestedAt)
		for _, t := range j.Targets {
			switch {
			case t.Confirmed:
				fmt.Fprintf(c.stdout, "    %-24s confirmed after %d attempt(s)\n", t.Name, t.Attempts)
			case t.Attempts == 0:
				fmt.Fprintf(c.stdout, "    %-24s waiting\n", t.Name)
			default:
				fmt.Fprintf(c.stdout, "    %-24s failed %d time(s), next at %s: %s\n", t.Name, t.Attempts, t.NextAttemptAt, t.LastError)
			}
		}
	}
	return nil
}

func (c *cli) purgeCmd() *cobra.Command {
	var (
		asJSON            bool
		reason, reference string
		wait              time.Duration
	)
	cmd := &cobra.Command{
		Use:   "purge DIGEST...",
		Short: "Purge digests from every CDN and edge (admins)",
		Long: `Queues a purge of each digest on every CDN and edge the broker knows,
and prints the jobs. The broker retries each target with backoff until it
confirms; follow with 'custody purge status'. With --wait the command waits
until every job is done and exits 1 if one is not by then.

The same --reference for the same digest is the same job: repeating the
command does not purge twice. Without --reference a new one is made.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, digests []string) error {
			if reference == "" {
				b := make([]byte, 6)
				rand.Read(b)
				reference = "admin-" + hex.EncodeToString(b)
			}
			client, done, err := c.brokerClient(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			resp, err := client.PurgeDigests(cmd.Context(), &cdnbrokerv1.PurgeDigestsRequest{Digests: digests, Reason: reason, Reference: reference})
			if err != nil {
				return fmt.Errorf("queue purges: %w", err)
			}
			jobs := purgeJobs(resp.GetJobs())
			if wait > 0 {
				if jobs, err = c.waitPurges(cmd.Context(), client, jobs, wait); err != nil {
					_ = c.printPurgeJobs(jobs, asJSON)
					return err
				}
			}
			return c.printPurgeJobs(jobs, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the jobs as JSON (docs/cli-json.md)")
	cmd.Flags().StringVar(&reason, "reason", "admin", "retention-deleted, artifact-revoked, key-revoked, kill-switch or admin")
	cmd.Flags().StringVar(&reference, "reference", "", "what caused the purge (ticket, revocation ID); makes a repeated command idempotent")
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for every target to confirm")
	cmd.AddCommand(c.purgeStatusCmd())
	return cmd
}

func (c *cli) purgeStatusCmd() *cobra.Command {
	var asJSON, pendingOnly bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List pending and recently finished purge jobs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, done, err := c.brokerClient(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			resp, err := client.GetPurgeStatus(cmd.Context(), &cdnbrokerv1.GetPurgeStatusRequest{})
			if err != nil {
				return fmt.Errorf("get purge status: %w", err)
			}
			jobs := purgeJobs(resp.GetJobs())
			if pendingOnly {
				jobs = slices.DeleteFunc(jobs, func(j purgeJob) bool { return j.Done })
			}
			return c.printPurgeJobs(jobs, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the jobs as JSON (docs/cli-json.md)")
	cmd.Flags().BoolVar(&pendingOnly, "pending", false, "only jobs not yet confirmed by every target")
	return cmd
}

func (c *cli) brokerClient(ctx context.Context) (cdnbrokerv1.CdnBrokerServiceClient, func(), error) {
	env, err := c.env(ctx, "admin")
	if err != nil {
		return nil, nil, err
	}
	cc, err := env.Dial("cdn-broker")
	if err != nil {
		env.Close()
		return nil, nil, err
	}
	return cdnbrokerv1.NewCdnBrokerServiceClient(cc), func() { cc.Close(); env.Close() }, nil
}

// waitPurges polls the status until every job in jobs is done or wait
// passed; it returns the jobs' latest state.
func (c *cli) waitPurges(ctx context.Context, client cdnbrokerv1.CdnBrokerServiceClient, jobs []purgeJob, wait time.Duration) ([]purgeJob, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		if !slices.ContainsFunc(jobs, func(j purgeJob) bool { return !j.Done }) {
			return jobs, nil
		}
		select {
		case <-ctx.Done():
			var ids []string
			for _, j := range jobs {
				if !j.Done {
					ids = append(ids, j.ID)
				}
			}
			return jobs, denied("purge jobs %s not confirmed by every target after %s: see 'custody purge status' and docs/runbooks/purges.md",
				strings.Join(ids, ", "), wait)
		case <-time.After(500 * time.Millisecond):
		}
		resp, err := client.GetPurgeStatus(ctx, &cdnbrokerv1.GetPurgeStatusRequest{})
		if err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				continue
			}
			return jobs, fmt.Errorf("get purge status: %w", err)
		}
		latest := map[string]purgeJob{}
		for _, j := range purgeJobs(resp.GetJobs()) {
			latest[j.ID] = j
		}
		for i, j := range jobs {
			if l, ok := latest[j.ID]; ok {
				jobs[i] = l
			}
		}
	}
}
