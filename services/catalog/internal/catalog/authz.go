package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/tlog"
)

// Refusal reasons, the values of the reason label of
// custody_catalog_entries_refused_total.
const (
	ReasonUnknownType = "unknown_type" // no family of tlog's table covers the type
	ReasonNotEmitter  = "not_emitter"  // the caller is not the type's emitter
	ReasonBadActor    = "bad_actor"    // the caller's ID does not parse (never from an authenticated peer)
)

// newRefused returns custody_catalog_entries_refused_total, registered on
// reg if it is not nil.
func newRefused(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "custody_catalog_entries_refused_total",
		Help: "Log entries refused because the caller may not write their type, by reason.",
	}, []string{"reason"})
	for _, r := range []string{ReasonUnknownType, ReasonNotEmitter, ReasonBadActor} {
		c.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(c)
	}
	return c
}

// authorize checks, before anything is stored or logged, that actor may
// write entries of type typ (tlog.MayEmit, in the catalog's trust domain).
// A refusal wraps ErrPermissionDenied, names the type and the caller, is
// counted and logged.
func (c *Catalog) authorize(ctx context.Context, actor, typ string) error {
	id, err := spiffeid.FromString(actor)
	if err == nil {
		err = tlog.MayEmit(c.td, typ, id)
	}
	if err == nil {
		return nil
	}
	reason := ReasonBadActor
	switch {
	case errors.Is(err, tlog.ErrUnknownType):
		reason = ReasonUnknownType
	case errors.Is(err, tlog.ErrNotEmitter):
		reason = ReasonNotEmitter
	}
	c.refused.WithLabelValues(reason).Inc()
	c.logger.WarnContext(ctx, "log entry refused: the caller may not write this type",
		slog.String("type", trunc(typ)), slog.String("caller", trunc(actor)), slog.String("reason", reason))
	return fmt.Errorf("%w: %v", ErrPermissionDenied, err)
}
