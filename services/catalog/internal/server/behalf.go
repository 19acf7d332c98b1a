package server

import (
	"context"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/rpc"
)

// OnBehalfOfHeader carries, on a write a follower forwards to the log
// writer, the SPIFFE ID of the caller the follower authenticated and
// authorized (0070). The writer believes it only from a peer whose own
// SVID is the catalog's SPIFFE ID, and authorizes the ID it names by the
// same policy again; from any other peer the header is refused.
const OnBehalfOfHeader = "custody-on-behalf-of"

// WithForwarding lets the catalog's own SPIFFE ID (self) send writes on
// behalf of others, authorized by policy (the one the server is served
// with). Without it, a call that carries OnBehalfOfHeader is refused.
func WithForwarding(self spiffeid.ID, policy rpc.Policy) Option {
	return func(s *Server) { s.self, s.policy = self, policy }
}

// caller returns the actor of a write: the authenticated peer, or, when
// the peer is this catalog's own ID forwarding for someone, the caller it
// names, re-authorized for the method here.
func (s *Server) caller(ctx context.Context) (string, error) {
	id, ok := rpc.CallerID(ctx)
	if !ok {
		// The authorization interceptor already refuses such calls.
		return "", status.Error(codes.Unauthenticated, "no SPIFFE ID: connect with mTLS and an X.509-SVID")
	}
	behalf, has, err := onBehalfOf(ctx)
	if err != nil {
		return "", err
	}
	self := !s.self.IsZero() && id == s.self
	switch {
	case !has && !self:
		return id.String(), nil
	case has && !self:
		return "", status.Errorf(codes.PermissionDenied, "%s is set by %s: only the catalog's own ID forwards calls on behalf of others", OnBehalfOfHeader, id)
	case !has:
		return "", status.Errorf(codes.PermissionDenied, "%s writes only on behalf of a caller (%s)", id, OnBehalfOfHeader)
	}
	method, _ := grpc.Method(ctx)
	if behalf == s.self || !s.policy.Allowed(method, behalf) {
		return "", status.Errorf(codes.PermissionDenied, "%s denied for %s (forwarded by %s)", method, behalf, id)
	}
	return behalf.String(), nil
}

// onBehalfOf returns the ID in OnBehalfOfHeader; more than one value, or
// one that is not a SPIFFE ID, is refused.
func onBehalfOf(ctx context.Context) (spiffeid.ID, bool, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(OnBehalfOfHeader)
	switch len(v) {
	case 0:
		return spiffeid.ID{}, false, nil
	case 1:
	default:
		return spiffeid.ID{}, true, status.Errorf(codes.InvalidArgument, "%s: want one value, got %d", OnBehalfOfHeader, len(v))
	}
	id, err := spiffeid.FromString(v[0])
	if err != nil {
		return spiffeid.ID{}, true, status.Errorf(codes.InvalidArgument, "%s: not a SPIFFE ID", OnBehalfOfHeader)
	}
	return id, true, nil
}
