package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

// serveKeyWrap registers KeyWrapService for the --wrapping-key KEKs,
// creating missing ones first with --create-keys or --dev. Without
// --wrapping-key the service is not registered and every call to it is
// Unimplemented (after the authorization check).
func serveKeyWrap(ctx context.Context, cfg config, backend keys.Backend, srv grpc.ServiceRegistrar, logger *slog.Logger) error {
	if len(cfg.WrappingKeys) == 0 {
		return nil
	}
	w, ok := backend.(interface {
		server.Wrapper
		EnsureWrappingKey(ctx context.Context, name string) (int, error)
	})
	if !ok {
		return fmt.Errorf("--wrapping-key: the %s key back end holds no KEKs", backend.Kind())
	}
	if cfg.CreateKeys || cfg.Dev {
		for _, name := range cfg.WrappingKeys {
			v, err := w.EnsureWrappingKey(ctx, name)
			switch {
			case errors.Is(err, keys.ErrUnavailable):
				// Fail closed per request: wrapping resumes when the token does.
				logger.Error("cannot check the KEK now; wrapping fails until the token is back", slog.String("kek", name), slog.Any("error", err))
			case err != nil:
				return fmt.Errorf("create KEK %q: %w", name, err)
			default:
				logger.Info("wrapping data keys", slog.String("kek", name), slog.Int("newest_version", v))
			}
		}
	}
	signerv1.RegisterKeyWrapServiceServer(srv, server.NewKeyWrap(w, cfg.WrappingKeys, logger))
	return nil
}
