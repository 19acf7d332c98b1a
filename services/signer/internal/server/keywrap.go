package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/services/signer/internal/keys"
)

// Wrapper is a key back end that holds key-encryption keys (keys/pkcs11).
// Its errors wrap the sentinels of package keys.
type Wrapper interface {
	WrapKey(ctx context.Context, name string, dataKey []byte) (version int, wrapped []byte, err error)
	UnwrapKey(ctx context.Context, name string, version int, wrapped []byte) ([]byte, error)
	RewrapKey(ctx context.Context, name string, version int, wrapped []byte) (int, []byte, error)
	RotateWrappingKey(ctx context.Context, name string) (int, error)
	DestroyWrappingKeyVersion(ctx context.Context, name string, version int) error
}

// KeyWrapPolicy is who may call KeyWrapService: the publisher wraps,
// unwraps and rewraps its data keys; admins rotate and destroy KEK
// versions. Everyone else, admins included for the data keys, is denied.
func KeyWrapPolicy(td spiffeid.TrustDomain) rpc.Policy {
	wd := signerv1.KeyWrapService_ServiceDesc
	publisher := rpc.ID(spiffeid.RequireFromPath(td, "/service/publisher"))
	admin := rpc.Under{TrustDomain: td, Prefix: "/admin"}
	return rpc.Policy{
		rpc.Method(wd, "WrapDataKey"):               {publisher},
		rpc.Method(wd, "UnwrapDataKey"):             {publisher},
		rpc.Method(wd, "RewrapDataKey"):             {publisher},
		rpc.Method(wd, "RotateWrappingKey"):         {admin},
		rpc.Method(wd, "DestroyWrappingKeyVersion"): {admin},
	}
}

// KeyWrap implements signerv1.KeyWrapServiceServer on the KEKs it is
// given; a request naming any other key is NotFound, so the publisher
// cannot use a key kept for another purpose.
type KeyWrap struct {
	signerv1.UnimplementedKeyWrapServiceServer
	w      Wrapper
	names  map[string]bool
	logger *slog.Logger
}

// NewKeyWrap serves the KEKs named in names from w.
func NewKeyWrap(w Wrapper, names []string, logger *slog.Logger) *KeyWrap {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return &KeyWrap{w: w, names: m, logger: logger}
}

func (k *KeyWrap) check(name string) error {
	if !k.names[name] {
		return status.Errorf(codes.NotFound, "the signer serves no KEK %q (see its --wrapping-key)", name)
	}
	return nil
}

// WrapDataKey implements signerv1.KeyWrapServiceServer.
func (k *KeyWrap) WrapDataKey(ctx context.Context, req *signerv1.WrapDataKeyRequest) (*signerv1.WrapDataKeyResponse, error) {
	if err := k.check(req.GetKeyName()); err != nil {
		return nil, err
	}
	v, w, err := k.w.WrapKey(ctx, req.GetKeyName(), req.GetDataKey())
	if err != nil {
		return nil, k.status(ctx, "wrap data key", err)
	}
	return &signerv1.WrapDataKeyResponse{Version: int32(v), Wrapped: w}, nil
}

// UnwrapDataKey implements signerv1.KeyWrapServiceServer.
func (k *KeyWrap) UnwrapDataKey(ctx context.Context, req *signerv1.UnwrapDataKeyRequest) (*signerv1.UnwrapDataKeyResponse, error) {
	if err := k.check(req.GetKeyName()); err != nil {
		return nil, err
	}
	dk, err := k.w.UnwrapKey(ctx, req.GetKeyName(), int(req.GetVersion()), req.GetWrapped())
	if err != nil {
		return nil, k.status(ctx, "unwrap data key", err)
	}
	return &signerv1.UnwrapDataKeyResponse{DataKey: dk}, nil
}

// RewrapDataKey implements signerv1.KeyWrapServiceServer.
func (k *KeyWrap) RewrapDataKey(ctx context.Context, req *signerv1.RewrapDataKeyRequest) (*signerv1.RewrapDataKeyResponse, error) {
	if err := k.check(req.GetKeyName()); err != nil {
		return nil, err
	}
	v, w, err := k.w.RewrapKey(ctx, req.GetKeyName(), int(req.GetVersion()), req.GetWrapped())
	if err != nil {
		return nil, k.status(ctx, "rewrap data key", err)
	}
	return &signerv1.RewrapDataKeyResponse{Version: int32(v), Wrapped: w}, nil
}

// RotateWrappingKey implements signerv1.KeyWrapServiceServer.
func (k *KeyWrap) RotateWrappingKey(ctx context.Context, req *signerv1.RotateWrappingKeyRequest) (*signerv1.RotateWrappingKeyResponse, error) {
	if err := k.check(req.GetKeyName()); err != nil {
		return nil, err
	}
	v, err := k.w.RotateWrappingKey(ctx, req.GetKeyName())
	if err != nil {
		return nil, k.status(ctx, "rotate KEK", err)
	}
	id, _ := rpc.CallerID(ctx)
	k.logger.InfoContext(ctx, "KEK rotated", slog.String("kek", req.GetKeyName()), slog.Int("version", v), slog.String("by", id.String()))
	return &signerv1.RotateWrappingKeyResponse{Version: int32(v)}, nil
}

// DestroyWrappingKeyVersion implements signerv1.KeyWrapServiceServer.
func (k *KeyWrap) DestroyWrappingKeyVersion(ctx context.Context, req *signerv1.DestroyWrappingKeyVersionRequest) (*signerv1.DestroyWrappingKeyVersionResponse, error) {
	if err := k.check(req.GetKeyName()); err != nil {
		return nil, err
	}
	if err := k.w.DestroyWrappingKeyVersion(ctx, req.GetKeyName(), int(req.GetVersion())); err != nil {
		return nil, k.status(ctx, "destroy KEK version", err)
	}
	id, _ := rpc.CallerID(ctx)
	k.logger.WarnContext(ctx, "KEK version destroyed", slog.String("kek", req.GetKeyName()), slog.Int("version", int(req.GetVersion())), slog.String("by", id.String()))
	return &signerv1.DestroyWrappingKeyVersionResponse{}, nil
}

// status maps a back-end error; messages name the KEK and the token,
// never key material.
func (k *KeyWrap) status(ctx context.Context, what string, err error) error {
	switch {
	case errors.Is(err, keys.ErrInvalid), errors.Is(err, keys.ErrBadWrappedKey):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, keys.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, keys.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	k.logger.ErrorContext(ctx, what, slog.Any("error", err))
	return status.Error(codes.Internal, fmt.Sprintf("%s: internal error (see the signer's log)", what))
}
