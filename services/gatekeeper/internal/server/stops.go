package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/stopstate"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
	"github.com/custody-dev/custody/services/gatekeeper/internal/finding"
	"github.com/custody-dev/custody/services/gatekeeper/internal/purge"
	"github.com/custody-dev/custody/services/gatekeeper/internal/stop"
)

// Revocations tells the latest key revocation learned from the signer and
// when the signer last answered; admission.Gate is one.
type Revocations interface {
	Revocations() (latest, checked time.Time)
}

// Findings tells the per-artifact finding epochs and the overflow epoch
// (decision 0098); finding.Store is one.
type Findings interface {
	Epochs() ([]finding.Epoch, time.Time)
}

var _ Findings = (*finding.Store)(nil)

// WithFindings adds the finding epochs of f to every stop state served.
func (s *Server) WithFindings(f Findings) *Server {
	s.finds = f
	return s
}

// RevocationMaxAge is how old the gatekeeper's knowledge of the signer's
// revocations may be before GetStopState fails closed with Unavailable.
const RevocationMaxAge = 5 * time.Second

// WithStops serves the stop RPCs from st, with revocation epochs from rev.
// Without it they fail with Unavailable.
func (s *Server) WithStops(st *stop.Store, rev Revocations) *Server {
	s.stops, s.rev = st, rev
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

func (s *Server) caller(ctx context.Context) (string, error) {
	id, ok := rpc.CallerID(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no SPIFFE ID: connect with mTLS and an X.509-SVID")
	}
	if s.stops == nil {
		return "", status.Error(codes.Unavailable, "stop state not configured on this gatekeeper")
	}
	return id.String(), nil
}

// Pause turns an environment's pause on; see the proto.
func (s *Server) Pause(ctx context.Context, req *gatekeeperv1.PauseRequest) (*gatekeeperv1.PauseResponse, error) {
	id, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkEnv(req.GetEnvironment()); err != nil {
		return nil, err
	}
	res, err := s.stops.On(ctx, req.GetEnvironment(), req.GetReason(), id)
	if err != nil {
		return nil, s.stopStatus(ctx, "Pause", err)
	}
	st, err := s.protoState(res.State, false)
	if err != nil {
		return nil, err
	}
	return &gatekeeperv1.PauseResponse{State: st, LogIndex: res.LogIndex}, nil
}

// Resume approves lifting an environment's pause; see the proto.
func (s *Server) Resume(ctx context.Context, req *gatekeeperv1.ResumeRequest) (*gatekeeperv1.ResumeResponse, error) {
	id, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkEnv(req.GetEnvironment()); err != nil {
		return nil, err
	}
	res, err := s.stops.Approve(ctx, req.GetEnvironment(), id)
	if err != nil {
		return nil, s.stopStatus(ctx, "Resume", err)
	}
	st, err := s.protoState(res.State, false)
	if err != nil {
		return nil, err
	}
	return &gatekeeperv1.ResumeResponse{Lifted: res.Lifted, Approvals: int32(res.Approvals), Quorum: int32(res.Quorum), State: st, LogIndex: res.LogIndex}, nil
}

// WithPurges has every kill switch purge the deployed artifacts from
// every cache through q. A pause does not purge: a paused environment
// resumes with the same blobs, and the stop alone keeps them from being
// admitted.
func (s *Server) WithPurges(q *purge.Queue) *Server {
	s.purges = q
	return s
}

// KillSwitchOn turns the kill switch on; see the proto.
func (s *Server) KillSwitchOn(ctx context.Context, req *gatekeeperv1.KillSwitchOnRequest) (*gatekeeperv1.KillSwitchOnResponse, error) {
	id, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.stops.On(ctx, stop.KillSwitch, req.GetReason(), id)
	if res != nil && s.purges != nil {
		// The stop applies (even if its event is not logged yet): record
		// its purge, one per epoch; the queue asks the broker until it
		// accepts.
		ref := stopstate.KillSwitchPurgeReference(res.State.KillSwitch.Epoch)
		if perr := s.purges.Add(ref, s.now()); perr != nil {
			s.logger.ErrorContext(ctx, "kill-switch purge not recorded: purge the deployed artifacts by hand (custody purge --reason admin)",
				slog.String("reference", ref), slog.Any("error", perr))
		}
	}
	if err != nil {
		return nil, s.stopStatus(ctx, "KillSwitchOn", err)
	}
	st, err := s.protoState(res.State, false)
	if err != nil {
		return nil, err
	}
	return &gatekeeperv1.KillSwitchOnResponse{State: st, LogIndex: res.LogIndex}, nil
}

// KillSwitchOff approves lifting the kill switch; see the proto.
func (s *Server) KillSwitchOff(ctx context.Context, _ *gatekeeperv1.KillSwitchOffRequest) (*gatekeeperv1.KillSwitchOffResponse, error) {
	id, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.stops.Approve(ctx, stop.KillSwitch, id)
	if err != nil {
		return nil, s.stopStatus(ctx, "KillSwitchOff", err)
	}
	st, err := s.protoState(res.State, false)
	if err != nil {
		return nil, err
	}
	return &gatekeeperv1.KillSwitchOffResponse{Lifted: res.Lifted, Approvals: int32(res.Approvals), Quorum: int32(res.Quorum), State: st, LogIndex: res.LogIndex}, nil
}

// GetStopState returns every stop and epoch; it fails with Unavailable
// when the signer's revocations are not known recently, so that readers
// fail closed.
func (s *Server) GetStopState(ctx context.Context, _ *gatekeeperv1.GetStopStateRequest) (*gatekeeperv1.GetStopStateResponse, error) {
	if _, err := s.caller(ctx); err != nil {
		return nil, err
	}
	st, err := s.protoState(s.stops.State(), true)
	if err != nil {
		return nil, err
	}
	return &gatekeeperv1.GetStopStateResponse{State: st}, nil
}

// protoState converts st; with strict, it refuses when the revocations are
// stale.
func (s *Server) protoState(st stop.State, strict bool) (*gatekeeperv1.StopState, error) {
	now := s.now()
	latest, checked := s.rev.Revocations()
	if strict && (checked.IsZero() || now.Sub(checked) > RevocationMaxAge) {
		return nil, status.Errorf(codes.Unavailable, "the gatekeeper has not learned the signer's key revocations for more than %s: the stop state is unknown, refuse everything; check the signer is running", RevocationMaxAge)
	}
	conv := func(target string, v stop.Stop) *gatekeeperv1.Stop {
		p := &gatekeeperv1.Stop{Active: v.Active, Epoch: v.Epoch, Reason: v.Reason, TurnedOnBy: v.By, LiftApprovals: v.Approvals, LiftQuorum: int32(s.stops.Quorum(target))}
		if !v.EpochTime.IsZero() {
			p.EpochTime = timestamppb.New(v.EpochTime)
		}
		if !v.LiftedAt.IsZero() {
			p.LiftedAt = timestamppb.New(v.LiftedAt)
		}
		return p
	}
	out := &gatekeeperv1.StopState{KillSwitch: conv(stop.KillSwitch, st.KillSwitch), AsOf: timestamppb.New(now)}
	envs := make([]string, 0, len(st.Pauses))
	for env := range st.Pauses {
		envs = append(envs, env)
	}
	sort.Strings(envs)
	for _, env := range envs {
		out.Pauses = append(out.Pauses, &gatekeeperv1.EnvironmentStop{Environment: env, Stop: conv(env, st.Pauses[env])})
	}
	if !latest.IsZero() {
		out.RevocationTime = timestamppb.New(latest)
	}
	if !checked.IsZero() {
		out.RevocationsCheckedAt = timestamppb.New(checked)
	}
	if s.finds != nil {
		epochs, overflow := s.finds.Epochs()
		for _, e := range epochs {
			out.Findings = append(out.Findings, &gatekeeperv1.FindingEpoch{Digest: e.Digest, Environment: e.Environment, EpochTime: timestamppb.New(e.Time), AdvisoryId: e.Advisory})
		}
		if !overflow.IsZero() {
			out.FindingsOverflowTime = timestamppb.New(overflow)
		}
	}
	revoked, overflow := s.stops.RevocationEpochs(now)
	for _, r := range revoked {
		out.Revoked = append(out.Revoked, revokedProto(r))
	}
	if !overflow.IsZero() {
		out.RevokedOverflowTime = timestamppb.New(overflow)
	}
	return out, nil
}

// checkEnv refuses anything but an environment name, including the kill
// switch's internal target name.
func checkEnv(env string) error {
	if !admission.ValidEnvironment(env) {
		return status.Errorf(codes.InvalidArgument, "environment %q: want a name like prod or staging (lowercase letters, digits, '-' and '_')", quote.Prefix(env))
	}
	return nil
}

// stopStatus maps stop errors to status codes.
func (s *Server) stopStatus(ctx context.Context, method string, err error) error {
	switch {
	case errors.Is(err, stop.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, stop.ErrNotActive):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, stop.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		traceID := trace.SpanContextFromContext(ctx).TraceID().String()
		s.logger.WarnContext(ctx, "stop change incomplete", slog.String("method", method), slog.String("trace_id", traceID), slog.Any("error", err))
		msg := "the stop state could not be changed; retry"
		var f *stop.Failure
		if errors.As(err, &f) {
			msg = f.Public
		}
		return status.Error(codes.Unavailable, fmt.Sprintf("%s (trace %s)", msg, traceID))
	default:
		traceID := trace.SpanContextFromContext(ctx).TraceID().String()
		s.logger.ErrorContext(ctx, "internal error", slog.String("method", method), slog.String("trace_id", traceID), slog.Any("error", err))
		return status.Errorf(codes.Internal, "internal error (trace %s)", traceID)
	}
}
