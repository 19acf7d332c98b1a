package rpc

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	protov2 "google.golang.org/protobuf/proto"
)

// errMalformed is what a caller learns about a request that does not
// unmarshal: nothing about its bytes.
var errMalformed = status.Error(codes.InvalidArgument, "malformed request: not a valid protobuf message for this method")

// malformedGuard makes a request that does not unmarshal (bad wire format,
// invalid UTF-8 in a string field) fail with InvalidArgument rather than the
// Internal grpc-go gives every codec error. grpc-go writes that status
// inside RecvMsg, before a handler or interceptor sees the error, so the
// codec does not return one: it resets the message, records it as
// malformed, and the interceptors, which get the same message, refuse it.
// Every recorded message is removed by the interceptor that sees it.
type malformedGuard struct {
	codec   encoding.CodecV2
	authz   *authorizer
	pending sync.Map // message pointer → struct{}
}

func newMalformedGuard(authz *authorizer) *malformedGuard {
	return &malformedGuard{codec: encoding.GetCodecV2(proto.Name), authz: authz}
}

// guardCodec is the server's codec: grpc-go's protobuf codec, reporting
// unmarshal failures to the guard.
type guardCodec struct{ g *malformedGuard }

func (c guardCodec) Name() string { return proto.Name }

func (c guardCodec) Marshal(v any) (mem.BufferSlice, error) { return c.g.codec.Marshal(v) }

func (c guardCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.g.codec.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	m, ok := v.(protov2.Message)
	if !ok {
		return err // not a protobuf message: grpc-go's own error stands
	}
	protov2.Reset(m)
	c.g.pending.Store(v, struct{}{})
	return nil
}

// take reports whether v was recorded as malformed, and forgets it.
func (g *malformedGuard) take(v any) bool {
	_, ok := g.pending.LoadAndDelete(v)
	return ok
}

// unary must come before any interceptor that can end a call (recovery,
// authorization), so that it sees every request that was decoded; the RPC
// counter comes first, so that refused malformed requests are counted. A caller that may not call the method gets PermissionDenied
// before it learns that its message was malformed.
func (g *malformedGuard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if g.take(req) {
		if err := g.authz.check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return nil, errMalformed
	}
	return handler(ctx, req)
}

// stream wraps the stream so that every malformed message received fails
// RecvMsg with InvalidArgument; authorization runs before any handler
// receives.
func (g *malformedGuard) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &guardedStream{ServerStream: ss, g: g})
}

type guardedStream struct {
	grpc.ServerStream
	g *malformedGuard
}

func (s *guardedStream) RecvMsg(v any) error {
	if err := s.ServerStream.RecvMsg(v); err != nil {
		return err
	}
	if s.g.take(v) {
		return errMalformed
	}
	return nil
}
