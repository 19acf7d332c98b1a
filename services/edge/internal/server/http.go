// Package server is the edge's HTTPS content endpoint and its gRPC purge API.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/trace"

	libdigest "github.com/custody-dev/custody/libs/digest"
	edgev1 "github.com/custody-dev/custody/libs/gen/custody/edge/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/stopstate"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/token"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/edgekeys"
	"github.com/custody-dev/custody/services/edge/internal/cache"
)

const blobPrefix = "/v1/blobs/sha256/"

// Stops tells whether a token issued at a time for an artifact digest and
// an environment may still be used; stopstate.Watcher is one.
type Stops interface {
	Check(env, digest string, issued time.Time, precision time.Duration) error
}

var _ Stops = (*stopstate.Watcher)(nil)

// TokenKeys gives the keys that verify tokens at a time, and those listed
// but outside their window; edgekeys.Keys (the trust root's edge token keys)
// is the edge's, StaticKeys a fixed set for tests and benchmarks. An error
// means no token can be verified: every request is refused with 503.
type TokenKeys interface {
	TokenKeys(now time.Time) (trustroot.EdgeTokenKeySet, error)
}

var _ TokenKeys = (*edgekeys.Keys)(nil)

// StaticKeys is a fixed set of token keys by id (token.KeyID), valid at
// any time.
type StaticKeys map[string]ed25519.PublicKey

// TokenKeys returns s as the valid keys.
func (s StaticKeys) TokenKeys(time.Time) (trustroot.EdgeTokenKeySet, error) {
	return trustroot.EdgeTokenKeySet{Valid: s}, nil
}

// Handler serves GET and HEAD /v1/blobs/sha256/<hex>?token=….
type Handler struct {
	Cache *cache.Cache
	// Keys verify tokens; required.
	Keys TokenKeys
	// Limits bound token issue times and lifetimes.
	Limits token.Limits
	// Stops is the gatekeeper's stop state; required: without it every
	// token is refused.
	Stops   Stops
	Logger  *slog.Logger
	Metrics *telemetry.Metrics
	// HTTP are the edge's request metrics; nil records none.
	HTTP *HTTPMetrics
	// Telemetry, if set, traces each request as a server span, a child
	// of the caller's W3C traceparent; nil records none.
	Telemetry *telemetry.Telemetry
	Now       func() time.Time
	// TrustedProxies are the socket peers whose X-Forwarded-For is
	// believed, for tokens bound to a client range; empty: the client is
	// the socket peer, whatever headers say.
	TrustedProxies []netip.Prefix
}

type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	// digest, decisionID and refused are what the access log and the
	// metrics say of the request, once known.
	digest, decisionID, refused string
}

func (r *recorder) WriteHeader(code int) { r.status = code; r.ResponseWriter.WriteHeader(code) }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// ServeHTTP serves one blob request and writes its access line: method,
// path (never the query: it carries the token), digest, decision_id,
// status, refused (the 403 reason), bytes written, duration, client (the
// address clientAddr resolves, the one client-bound tokens are checked
// against; empty if a trusted proxy named none) and, when that is not the
// socket peer, peer (the socket address: the proxy).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The duration is measured on the monotonic clock, not on Now: Now is
	// the clock tokens are judged by, which may be set back or frozen.
	began := time.Now()
	client := h.clientAddr(r)
	rec := &recorder{ResponseWriter: w}
	var span trace.Span = noopSpan
	if h.Telemetry != nil {
		var ctx context.Context
		ctx, span = startServerSpan(h.Telemetry, r, client)
		r = r.WithContext(ctx)
	}
	defer func() {
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		endServerSpan(span, rec)
		attrs := []slog.Attr{slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.String("digest", rec.digest), slog.String("decision_id", rec.decisionID),
			slog.Int("status", rec.status), slog.String("refused", rec.refused), slog.Int64("bytes", rec.bytes),
			slog.Duration("duration", time.Since(began)), slog.String("client", addrString(client))}
		if peer, err := netip.ParseAddrPort(r.RemoteAddr); err != nil || peer.Addr().Unmap() != client {
			attrs = append(attrs, slog.String("peer", r.RemoteAddr))
		}
		h.Logger.LogAttrs(r.Context(), slog.LevelInfo, "access", attrs...)
		if h.HTTP != nil {
			h.HTTP.Requests.WithLabelValues(strconv.Itoa(rec.status)).Inc()
			if rec.refused != "" {
				h.HTTP.Forbidden.WithLabelValues(rec.refused).Inc()
			}
			if rec.status == http.StatusOK || rec.status == http.StatusPartialContent {
				h.HTTP.BytesServed.Add(float64(rec.bytes))
			}
		}
	}()
	rec.Header().Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		rec.Header().Set("Allow", "GET, HEAD")
		http.Error(rec, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hexDigest, ok := strings.CutPrefix(r.URL.Path, blobPrefix)
	if !ok || !libdigest.ValidHex(hexDigest) {
		http.Error(rec, "not found", http.StatusNotFound)
		return
	}
	digest := libdigest.Prefix + hexDigest
	rec.digest = digest
	tok := r.URL.Query().Get("token")
	if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && tok == "" {
		tok = b
	}
	now := h.Now()
	keys, err := h.Keys.TokenKeys(now)
	if err != nil {
		h.Logger.ErrorContext(r.Context(), "cannot verify tokens: serving nothing", slog.Any("error", err))
		http.Error(rec, "no token keys: this edge has no valid trust root with edge token keys, so it serves nothing; try another edge", http.StatusServiceUnavailable)
		return
	}
	claims, err := token.VerifyLimits(tok, keys.Valid, digest, now, h.Limits)
	if err != nil {
		h.Metrics.SignatureFailures.WithLabelValues("token").Inc()
		var unknown *token.UnknownKeyError
		if errors.As(err, &unknown) {
			if k, ok := keys.Outside[unknown.KeyID]; ok {
				// Listed, but not now: a key rotated out, or one published
				// before its start. The window is public (the trust root's).
				rec.refused = "key-outside-window"
				http.Error(rec, fmt.Sprintf("forbidden: token signed by key %s outside its window (%s) in trust root v%d at %s",
					k.ID, k.Window(), keys.Version, now.UTC().Format(time.RFC3339)), http.StatusForbidden)
				return
			}
		}
		rec.refused = reasonLabel(err)
		http.Error(rec, "forbidden: "+reason(err), http.StatusForbidden)
		return
	}
	rec.decisionID = claims.DecisionID
	if claims.ClientRange.IsValid() {
		if err := claims.CheckClient(client); err != nil {
			h.Metrics.SignatureFailures.WithLabelValues("token").Inc()
			rec.refused = "client-ip"
			http.Error(rec, "forbidden: "+token.ErrClientIP.Error(), http.StatusForbidden)
			return
		}
	}
	if h.Stops == nil {
		http.Error(rec, "stop state unknown: this edge serves nothing", http.StatusServiceUnavailable)
		return
	}
	// The decision's time (milliseconds) is compared with the epochs: the
	// broker mints a token only after its decision, so the decision is the
	// earlier. A token without one is judged by its issue time, whole
	// seconds, an epoch in the same second counting as after it.
	issued, precision := claims.IssuedAt, time.Second
	if !claims.DecidedAt.IsZero() {
		issued, precision = claims.DecidedAt, time.Millisecond
		if claims.IssuedAt.Before(issued.Truncate(time.Second)) {
			issued, precision = claims.IssuedAt, time.Second
		}
	}
	if err := h.Stops.Check(claims.Environment, digest, issued, precision); err != nil {
		if errors.Is(err, stopstate.ErrUnknown) {
			http.Error(rec, "stop state unknown: this edge cannot reach the gatekeeper, so it serves nothing; try another edge", http.StatusServiceUnavailable)
			return
		}
		rec.refused = "before-epoch"
		switch {
		case errors.Is(err, stopstate.ErrStopped):
			rec.refused = "stopped"
		case errors.Is(err, stopstate.ErrRevoked):
			rec.refused = "revoked"
		}
		http.Error(rec, "forbidden: "+err.Error(), http.StatusForbidden)
		return
	}
	f, hit, err := h.Cache.Open(r.Context(), digest, hexDigest)
	if h.HTTP != nil && err == nil {
		result := "miss"
		if hit {
			result = "hit"
		}
		h.HTTP.CacheLookups.WithLabelValues(result).Inc()
	}
	switch {
	case errors.Is(err, cache.ErrNotFound):
		http.Error(rec, "not found: "+digest, http.StatusNotFound)
		return
	case errors.Is(err, cache.ErrIntegrity):
		h.Logger.ErrorContext(r.Context(), "integrity failure", slog.String("digest", digest), slog.Any("error", err))
		http.Error(rec, err.Error(), http.StatusBadGateway)
		return
	case errors.Is(err, cache.ErrStalled):
		http.Error(rec, fmt.Sprintf("origin stalled for %s: try another edge", digest), http.StatusGatewayTimeout)
		return
	case errors.Is(err, cache.ErrFull):
		h.Logger.WarnContext(r.Context(), "cache full", slog.String("digest", digest), slog.Any("error", err))
		http.Error(rec, fmt.Sprintf("edge cache full for %s: try another edge", digest), http.StatusServiceUnavailable)
		return
	case errors.Is(err, ErrOriginDown):
		http.Error(rec, fmt.Sprintf("origin unavailable for %s: try another edge", digest), http.StatusServiceUnavailable)
		return
	case err != nil:
		h.Logger.ErrorContext(r.Context(), "serve", slog.String("digest", digest), slog.Any("error", err))
		http.Error(rec, "internal error", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	hd := rec.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	hd.Set("ETag", `"`+digest+`"`)
	http.ServeContent(rec, r, "", time.Time{}, f)
	if err := f.Err(); err != nil {
		// The status line is out: all that is left is to cut the response
		// short, so the client sees a failed transfer, not a short blob.
		if errors.Is(err, cache.ErrIntegrity) {
			h.Logger.ErrorContext(r.Context(), "integrity failure", slog.String("digest", digest), slog.Any("error", err))
		}
		panic(http.ErrAbortHandler)
	}
}

// clientAddr is the address a client-bound token is checked against and
// the access log names: the socket peer; if that is a trusted proxy, the
// last X-Forwarded-For hop that is not one (each proxy appends the peer it
// saw, so the entries before an untrusted hop are the client's own
// claims). Anything unparsable gives the zero address, which no range
// contains. The hops are read from the right and only up to the client:
// what a client prepends costs nothing, however long.
func (h *Handler) clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := ap.Addr().Unmap()
	if !h.trusted(addr) {
		return addr
	}
	vals := r.Header.Values("X-Forwarded-For")
	for i := len(vals) - 1; i >= 0; i-- {
		v := vals[i]
		for {
			j := strings.LastIndexByte(v, ',')
			a, err := netip.ParseAddr(strings.TrimSpace(v[j+1:]))
			if err != nil {
				return netip.Addr{}
			}
			if a = a.Unmap(); !h.trusted(a) {
				return a
			}
			if j < 0 {
				break
			}
			v = v[:j]
		}
	}
	return netip.Addr{} // only proxies: no client to check
}

// addrString is a's text, or "" for the zero address (no client known).
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func (h *Handler) trusted(a netip.Addr) bool {
	for _, p := range h.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// TLSConfig is the edge's HTTPS configuration with cert (cmd/edge and the
// benchmark use the same).
func TLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// reason is the part of a token error a client may see.
func reason(err error) string {
	for _, e := range []error{token.ErrExpired, token.ErrDigest, token.ErrUnknownKey, token.ErrSignature, token.ErrMalformed, token.ErrIssuedAt, token.ErrLifetime} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "invalid token"
}

// reasonLabel is the metric label of a token error: a short, fixed set.
func reasonLabel(err error) string {
	for _, e := range []struct {
		err   error
		label string
	}{{token.ErrExpired, "expired"}, {token.ErrDigest, "digest"}, {token.ErrUnknownKey, "unknown-key"}, {token.ErrSignature, "signature"},
		{token.ErrMalformed, "malformed"}, {token.ErrIssuedAt, "issued-at"}, {token.ErrLifetime, "lifetime"}} {
		if errors.Is(err, e.err) {
			return e.label
		}
	}
	return "invalid"
}

// Policy is who may call the edge's gRPC API; see docs/services.md.
func Policy(td spiffeid.TrustDomain) rpc.Policy {
	return rpc.Policy{
		rpc.Method(edgev1.EdgeService_ServiceDesc, "Purge"): {
			rpc.ID(spiffeid.RequireFromPath(td, "/service/cdn-broker")), rpc.Under{TrustDomain: td, Prefix: "/admin"},
		},
	}
}

// Purger implements edgev1.EdgeServiceServer.
type Purger struct {
	edgev1.UnimplementedEdgeServiceServer
	Cache  *cache.Cache
	Logger *slog.Logger
}

// Purge drops a digest from the cache.
func (p *Purger) Purge(ctx context.Context, req *edgev1.PurgeRequest) (*edgev1.PurgeResponse, error) {
	hexDigest, err := libdigest.Parse(req.GetDigest())
	if err != nil {
		return nil, statusInvalid("%v", err)
	}
	purged, err := p.Cache.Purge(hexDigest)
	if err != nil {
		return nil, err
	}
	caller, _ := rpc.CallerID(ctx)
	p.Logger.InfoContext(ctx, "purge", slog.String("digest", req.GetDigest()), slog.Bool("purged", purged), slog.String("caller", caller.String()))
	return &edgev1.PurgeResponse{Purged: purged}, nil
}
