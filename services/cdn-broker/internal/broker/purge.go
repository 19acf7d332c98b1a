package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/backoff"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/stopstate"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purges"
)

// purgeReasons says which reasons each caller may give: a service asks
// only for the purges its own duty causes, admins for any.
func purgeReasons(td spiffeid.TrustDomain, caller spiffeid.ID) []string {
	switch {
	case caller == spiffeid.RequireFromPath(td, "/service/publisher"):
		return []string{"retention-deleted"}
	case caller == spiffeid.RequireFromPath(td, "/service/signer"):
		return []string{"key-revoked"}
	case caller == spiffeid.RequireFromPath(td, "/service/gatekeeper"):
		// The gatekeeper owns the kill switch and artifact revocations
		// (decision 0105).
		return []string{"kill-switch", "artifact-revoked"}
	case rpc.Under{TrustDomain: td, Prefix: "/admin"}.Allows(caller):
		return purges.Reasons
	}
	return nil
}

// PurgeDigests queues purges; see the proto for the contract.
func (b *Broker) PurgeDigests(ctx context.Context, req *cdnbrokerv1.PurgeDigestsRequest) (*cdnbrokerv1.PurgeDigestsResponse, error) {
	caller, ok := rpc.CallerID(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no caller identity")
	}
	if b.cfg.Purges == nil {
		return nil, status.Error(codes.Unavailable, "this broker runs without a purge queue: start it with --state-dir and --catalog-addr")
	}
	allowed := purgeReasons(caller.TrustDomain(), caller)
	if slices.Contains(purges.Reasons, req.GetReason()) && !slices.Contains(allowed, req.GetReason()) {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not purge for reason %q, only %v", caller, req.GetReason(), allowed)
	}
	jobs, err := b.cfg.Purges.Enqueue(ctx, caller.String(), req.GetReason(), req.GetReference(), req.GetDigests())
	switch {
	case errors.Is(err, purges.ErrInvalid):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, purges.ErrFull):
		return nil, status.Error(codes.ResourceExhausted, err.Error())
	case err != nil:
		b.cfg.Logger.ErrorContext(ctx, "cannot queue purges", "error", err)
		return nil, status.Error(codes.Unavailable, "the purge queue cannot be written: check the broker's state directory; retry")
	}
	if req.GetReason() == killSwitch && b.cfg.Issued != nil {
		if err := b.purgeIssued(ctx, caller.String(), req.GetReference()); err != nil {
			return nil, err
		}
	}
	resp := &cdnbrokerv1.PurgeDigestsResponse{}
	for _, j := range jobs {
		resp.Jobs = append(resp.Jobs, jobProto(j))
	}
	return resp, nil
}

const (
	killSwitch = "kill-switch"
	// maxExpansions bounds the kill-switch references whose progress is
	// kept; kill switches are rare, and a forgotten one only starts over.
	maxExpansions = 8
)

// expansion is the progress of adding the issued digests to one kill
// switch's purge: the digests as they were when its first batch arrived,
// and how many of them are queued.
type expansion struct {
	digests []string
	next    int
	done    bool
	started time.Time
}

// purgeIssued adds every digest the broker issued a commercial-CDN URL for
// to the kill switch's purge under the same reference, on the commercial
// CDN targets only: Custody's edges drop their whole cache on the kill
// switch by themselves. It runs once per reference (the gatekeeper sends
// its deployed digests in batches, and again until all are accepted); a
// full queue stops it with ResourceExhausted, so the gatekeeper asks again
// and it resumes where it stopped. After a broker restart it starts over,
// which queues nothing twice for the jobs the queue still holds.
func (b *Broker) purgeIssued(ctx context.Context, caller, reference string) error {
	b.killMu.Lock()
	defer b.killMu.Unlock()
	e := b.kills[reference]
	if e == nil {
		if b.kills == nil {
			b.kills = map[string]*expansion{}
		}
		if len(b.kills) >= maxExpansions {
			var oldest string
			for ref, x := range b.kills {
				if oldest == "" || x.started.Before(b.kills[oldest].started) {
					oldest = ref
				}
			}
			delete(b.kills, oldest)
		}
		e = &expansion{digests: b.cfg.Issued.Digests(), started: b.cfg.Now()}
		b.kills[reference] = e
		if len(e.digests) > 0 && !slices.ContainsFunc(b.cfg.Purges.Targets(), purges.IsCDN) {
			b.cfg.Logger.ErrorContext(ctx, "kill-switch purge: digests were issued commercial-CDN URLs but no CDN purge target is configured: purge them at each CDN by hand",
				slog.String("reference", reference), slog.Int("digests", len(e.digests)), slog.String("file", b.cfg.Issued.Path()))
			e.done = true
		}
	}
	for !e.done && e.next < len(e.digests) {
		chunk := e.digests[e.next:min(e.next+purges.MaxDigests, len(e.digests))]
		if _, err := b.cfg.Purges.EnqueueOn(ctx, caller, killSwitch, reference, chunk, purges.IsCDN); err != nil {
			b.cfg.Logger.WarnContext(ctx, "kill-switch purge: issued digests not all queued yet", slog.String("reference", reference),
				slog.Int("queued", e.next), slog.Int("digests", len(e.digests)), slog.Any("error", err))
			msg := fmt.Sprintf("kill-switch purge %s: %d of %d digests issued commercial-CDN URLs queued: %v; retry", reference, e.next, len(e.digests), err)
			if errors.Is(err, purges.ErrFull) {
				return status.Error(codes.ResourceExhausted, msg)
			}
			return status.Error(codes.Unavailable, msg)
		}
		e.next += len(chunk)
	}
	if !e.done {
		e.done = true
		b.cfg.Logger.InfoContext(ctx, "kill-switch purge: issued digests queued on the commercial CDNs", slog.String("reference", reference), slog.Int("digests", len(e.digests)))
	}
	return nil
}

// PurgeIssuedOnKillSwitch queues the digests the broker issued CDN URLs for
// under the purge reference of the kill switch turned on with epoch, as
// the requester self, retrying with jittered backoff (libs/backoff: 1 s doubling to 1 min) until
// they are queued or ctx ends. The broker's stop-state watcher calls it
// when it first sees the kill switch on, so this purge does not depend on
// the gatekeeper having deployed digests to send; when the gatekeeper's
// call comes too, the expansion runs once for the reference.
func (b *Broker) PurgeIssuedOnKillSwitch(ctx context.Context, epoch int64, self string) {
	if b.cfg.Purges == nil || b.cfg.Issued == nil {
		return
	}
	ref := stopstate.KillSwitchPurgeReference(epoch)
	retry := backoff.New(backoff.Policy{Min: time.Second, Max: time.Minute})
	for {
		if err := b.purgeIssued(ctx, self, ref); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry.Next()):
		}
	}
}

// GetPurgeStatus lists jobs; see the proto for the contract.
func (b *Broker) GetPurgeStatus(ctx context.Context, _ *cdnbrokerv1.GetPurgeStatusRequest) (*cdnbrokerv1.GetPurgeStatusResponse, error) {
	if b.cfg.Purges == nil {
		return nil, status.Error(codes.Unavailable, "this broker runs without a purge queue: start it with --state-dir and --catalog-addr")
	}
	resp := &cdnbrokerv1.GetPurgeStatusResponse{}
	for _, j := range b.cfg.Purges.Status() {
		resp.Jobs = append(resp.Jobs, jobProto(j))
	}
	return resp, nil
}

func jobProto(j purges.Job) *cdnbrokerv1.PurgeJob {
	p := &cdnbrokerv1.PurgeJob{Id: j.ID, Digest: j.Digest, Reason: j.Reason, Reference: j.Reference, RequestedBy: j.RequestedBy,
		RequestedAt: timestamppb.New(j.RequestedAt), Done: j.Done}
	for _, t := range j.Targets {
		pt := &cdnbrokerv1.PurgeTarget{Name: t.Name, Confirmed: t.Confirmed, Attempts: uint32(t.Attempts), LastError: t.LastError}
		if !t.Confirmed && !t.Next.IsZero() {
			pt.NextAttemptAt = timestamppb.New(t.Next)
		}
		p.Targets = append(p.Targets, pt)
	}
	return p
}
