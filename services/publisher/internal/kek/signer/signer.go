// Package signer is the HSM key-encryption back end: data keys are wrapped
// and unwrapped by the signer's KeyWrapService under an AES-256 KEK that
// never leaves the signer's PKCS#11 token (decision 0059). The publisher
// links no cgo; the signer alone talks PKCS#11.
package signer

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/services/publisher/internal/kek"
)

// prefix starts every wrapped key: "signer:<kek>:v<N>:<base64 of IV ‖
// AES-GCM ciphertext ‖ tag>".
const prefix = "signer:"

// maxWrapped bounds the base64 part of a wrapped key: the signer's largest
// wrapped key (12 + 64 + 16 bytes) with room to spare.
const maxWrapped = 256

// callTimeout bounds one call, so that an upload fails closed rather than
// hangs when the signer or its token stalls.
const callTimeout = 15 * time.Second

// KEK wraps data keys through the signer. Safe for concurrent use.
type KEK struct {
	client signerv1.KeyWrapServiceClient
	name   string
	addr   string
}

var _ kek.KEK = (*KEK)(nil)

// New returns the back end for KEK name served by the signer at addr
// (named in errors) through client; it makes no call.
func New(client signerv1.KeyWrapServiceClient, name, addr string) (*KEK, error) {
	if !validName(name) {
		return nil, fmt.Errorf("signer kek: KEK name %q: want 1-64 of a-z, 0-9, '-', '_', starting with a letter", name)
	}
	return &KEK{client: client, name: name, addr: addr}, nil
}

// Name implements kek.KEK.
func (k *KEK) Name() string { return "signer" }

// Wrap implements kek.KEK with WrapDataKey.
func (k *KEK) Wrap(ctx context.Context, dataKey []byte) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	r, err := k.client.WrapDataKey(ctx, &signerv1.WrapDataKeyRequest{KeyName: k.name, DataKey: dataKey})
	if err != nil {
		return "", k.err("wrap", err)
	}
	if r.GetVersion() < 1 || len(r.GetWrapped()) == 0 {
		return "", fmt.Errorf("signer kek: WrapDataKey returned version %d and %d bytes", r.GetVersion(), len(r.GetWrapped()))
	}
	return k.format(r.GetVersion(), r.GetWrapped()), nil
}

// Unwrap implements kek.KEK with UnwrapDataKey.
func (k *KEK) Unwrap(ctx context.Context, wrapped string) ([]byte, error) {
	v, b, err := k.parse(wrapped)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	r, err := k.client.UnwrapDataKey(ctx, &signerv1.UnwrapDataKeyRequest{KeyName: k.name, Version: v, Wrapped: b})
	if err != nil {
		return nil, k.err("unwrap", err)
	}
	return r.GetDataKey(), nil
}

// Rewrap implements kek.KEK with RewrapDataKey: the signer opens and
// re-seals the key under the newest version; the publisher never sees it.
func (k *KEK) Rewrap(ctx context.Context, wrapped string) (string, error) {
	v, b, err := k.parse(wrapped)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	r, err := k.client.RewrapDataKey(ctx, &signerv1.RewrapDataKeyRequest{KeyName: k.name, Version: v, Wrapped: b})
	if err != nil {
		return "", k.err("rewrap", err)
	}
	if r.GetVersion() < v || len(r.GetWrapped()) == 0 {
		return "", fmt.Errorf("signer kek: RewrapDataKey returned version %d (had %d) and %d bytes", r.GetVersion(), v, len(r.GetWrapped()))
	}
	return k.format(r.GetVersion(), r.GetWrapped()), nil
}

func (k *KEK) format(version int32, wrapped []byte) string {
	return prefix + k.name + ":v" + strconv.Itoa(int(version)) + ":" + base64.RawStdEncoding.EncodeToString(wrapped)
}

// parse splits a wrapped key of this KEK; anything else is kek.ErrUnwrap.
func (k *KEK) parse(wrapped string) (int32, []byte, error) {
	v, b, err := Parse(wrapped)
	if err != nil {
		return 0, nil, err
	}
	if v.Name != k.name {
		return 0, nil, fmt.Errorf("%w: wrapped by KEK %q, this publisher uses %q", kek.ErrUnwrap, v.Name, k.name)
	}
	return v.Version, b, nil
}

// Wrapped names the KEK version of a wrapped key.
type Wrapped struct {
	Name    string
	Version int32
}

// Parse reads a wrapped key Wrap or Rewrap returned: the KEK version and
// the bytes the signer opens. Any other string is kek.ErrUnwrap.
func Parse(wrapped string) (Wrapped, []byte, error) {
	bad := func(why string) (Wrapped, []byte, error) {
		return Wrapped{}, nil, fmt.Errorf("%w: not a signer-wrapped key (%s)", kek.ErrUnwrap, why)
	}
	rest, ok := strings.CutPrefix(wrapped, prefix)
	if !ok {
		return bad("prefix")
	}
	name, rest, ok := strings.Cut(rest, ":")
	if !ok || !validName(name) {
		return bad("KEK name")
	}
	ver, b64, ok := strings.Cut(rest, ":")
	if !ok || len(ver) < 2 || ver[0] != 'v' || len(ver) > 10 || ver[1] == '0' {
		return bad("version")
	}
	n, err := strconv.ParseInt(ver[1:], 10, 32)
	if err != nil || n < 1 || strconv.FormatInt(n, 10) != ver[1:] {
		return bad("version")
	}
	if len(b64) == 0 || len(b64) > maxWrapped {
		return bad("length")
	}
	b, err := base64.RawStdEncoding.Strict().DecodeString(b64)
	if err != nil {
		return bad("base64")
	}
	return Wrapped{Name: name, Version: int32(n)}, b, nil
}

// err maps a KeyWrapService error: the signer or its token down or
// refusing this publisher is kek.ErrUnavailable (fail closed, retry later);
// a key that does not open, or a version the token no longer holds, is
// kek.ErrUnwrap.
func (k *KEK) err(op string, err error) error {
	st := status.Convert(err)
	where := fmt.Sprintf("signer kek %q at %s: %s", k.name, k.addr, op)
	switch st.Code() {
	case codes.InvalidArgument:
		if op == "wrap" {
			return fmt.Errorf("%s: %s", where, st.Message())
		}
		return fmt.Errorf("%s: %w: %s", where, kek.ErrUnwrap, st.Message())
	case codes.NotFound:
		if op == "wrap" {
			return fmt.Errorf("%s: %w: %s (create the KEK: signer --wrapping-key %s --create-keys)", where, kek.ErrUnavailable, st.Message(), k.name)
		}
		return fmt.Errorf("%s: %w: %s", where, kek.ErrUnwrap, st.Message())
	case codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented:
		return fmt.Errorf("%s: %w: %s (check the publisher's identity and the signer's --wrapping-key)", where, kek.ErrUnavailable, st.Message())
	case codes.Canceled:
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	return fmt.Errorf("%s: %w: %s: %s", where, kek.ErrUnavailable, st.Code(), st.Message())
}

func validName(name string) bool {
	if len(name) == 0 || len(name) > 64 || name[0] < 'a' || name[0] > 'z' {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
