// Package rpc builds Custody's gRPC servers and clients: SPIFFE mTLS,
// per-RPC authorization by SPIFFE ID, tracing, metrics, health and reflection.
package rpc

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffegrpc/grpccredentials"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/telemetry"
)

// Rule matches caller identities.
type Rule interface {
	// Allows reports whether id may make the call.
	Allows(id spiffeid.ID) bool
	String() string
}

// ID allows exactly one identity.
type ID spiffeid.ID

// Allows reports whether id is the identity.
func (r ID) Allows(id spiffeid.ID) bool { return spiffeid.ID(r) == id }
func (r ID) String() string             { return spiffeid.ID(r).String() }

// Under allows every identity of a trust domain whose path starts with a
// prefix segment, such as "/builder" for spiffe://td/builder/ci.
type Under struct {
	TrustDomain spiffeid.TrustDomain
	Prefix      string
}

// Allows reports whether id is in the trust domain and below the prefix.
func (r Under) Allows(id spiffeid.ID) bool {
	if id.TrustDomain() != r.TrustDomain {
		return false
	}
	p := strings.TrimSuffix(r.Prefix, "/")
	return strings.HasPrefix(id.Path(), p+"/")
}
func (r Under) String() string { return "spiffe://" + r.TrustDomain.Name() + r.Prefix + "/*" }

// Member allows every identity of a trust domain.
type Member spiffeid.TrustDomain

// Allows reports whether id is in the trust domain.
func (r Member) Allows(id spiffeid.ID) bool { return id.TrustDomain() == spiffeid.TrustDomain(r) }
func (r Member) String() string             { return "spiffe://" + spiffeid.TrustDomain(r).Name() + "/*" }

// Policy maps full gRPC method names ("/custody.signer.v1.SignerService/SignArtifact")
// to the rules that allow a caller. A method that is not in the policy is
// denied to everyone.
type Policy map[string][]Rule

// Allowed reports whether id may call method.
func (p Policy) Allowed(method string, id spiffeid.ID) bool {
	for _, r := range p[method] {
		if r.Allows(id) {
			return true
		}
	}
	return false
}

// CallerID returns the authenticated SPIFFE ID of the peer of an RPC.
func CallerID(ctx context.Context) (spiffeid.ID, bool) {
	return grpccredentials.PeerIDFromContext(ctx)
}

type authorizer struct {
	policy  Policy
	logger  *slog.Logger
	metrics *telemetry.Metrics
}

func (a *authorizer) check(ctx context.Context, method string) error {
	id, ok := CallerID(ctx)
	if !ok {
		return status.Errorf(codes.Unauthenticated, "%s: no SPIFFE ID: connect with mTLS and an X.509-SVID", method)
	}
	if a.policy.Allowed(method, id) {
		return nil
	}
	a.metrics.AuthzDenied.WithLabelValues(method).Inc()
	a.logger.WarnContext(ctx, "authorization denied", slog.String("method", method), slog.String("caller", id.String()))
	return status.Errorf(codes.PermissionDenied, "%s denied for %s", method, id)
}

func (a *authorizer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (a *authorizer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// Method returns the full gRPC method name of a method of a service
// descriptor, for building policies from generated code:
// rpc.Method(signerv1.SignerService_ServiceDesc, "SignArtifact").
func Method(sd grpc.ServiceDesc, name string) string {
	for _, m := range sd.Methods {
		if m.MethodName == name {
			return "/" + sd.ServiceName + "/" + name
		}
	}
	for _, s := range sd.Streams {
		if s.StreamName == name {
			return "/" + sd.ServiceName + "/" + name
		}
	}
	panic(fmt.Sprintf("service %s has no method %s", sd.ServiceName, name))
}
