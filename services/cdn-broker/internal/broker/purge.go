package broker

import (
	"context"
	"errors"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	"github.com/custody-dev/custody/libs/rpc"
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
	resp := &cdnbrokerv1.PurgeDigestsResponse{}
	for _, j := range jobs {
		resp.Jobs = append(resp.Jobs, jobProto(j))
	}
	return resp, nil
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
