// Package broker issues short-lived edge download URLs for digests that have
// a valid, fresh allow decision signed by the gatekeeper.
package broker

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/digest"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/stopstate"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/token"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/edgekeys"
	"github.com/custody-dev/custody/services/cdn-broker/internal/cdns"
	"github.com/custody-dev/custody/services/cdn-broker/internal/issued"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purges"
)

// Policy is who may call the broker; see docs/services.md.
func Policy(td spiffeid.TrustDomain) rpc.Policy {
	return rpc.Policy{
		rpc.Method(cdnbrokerv1.CdnBrokerService_ServiceDesc, "IssueDownloadUrl"): {
			rpc.Under{TrustDomain: td, Prefix: "/deployer"}, rpc.Under{TrustDomain: td, Prefix: "/admin"},
		},
		// Who causes purges; PurgeDigests also limits each to its reasons.
		rpc.Method(cdnbrokerv1.CdnBrokerService_ServiceDesc, "PurgeDigests"): {
			rpc.ID(spiffeid.RequireFromPath(td, "/service/publisher")), rpc.ID(spiffeid.RequireFromPath(td, "/service/signer")),
			rpc.ID(spiffeid.RequireFromPath(td, "/service/gatekeeper")), rpc.Under{TrustDomain: td, Prefix: "/admin"},
		},
		rpc.Method(cdnbrokerv1.CdnBrokerService_ServiceDesc, "GetPurgeStatus"): {
			rpc.Under{TrustDomain: td, Prefix: "/admin"},
		},
	}
}

// TokenKey is an Ed25519 key the broker signs edge tokens with from
// ValidFrom on (zero: from the start). Of several, the one with the latest
// ValidFrom not after now signs, so a rotation needs no restart at its
// instant (decision 0101): the new key is given ahead of time with the
// valid-from its trust-root entry has.
type TokenKey struct {
	Key       ed25519.PrivateKey
	ValidFrom time.Time
}

// CurrentTokenKey returns the key of keys that signs at now: the one with
// the latest ValidFrom not after now.
func CurrentTokenKey(keys []TokenKey, now time.Time) (ed25519.PrivateKey, error) {
	var cur *TokenKey
	for i := range keys {
		k := &keys[i]
		if !k.ValidFrom.After(now) && (cur == nil || k.ValidFrom.After(cur.ValidFrom)) {
			cur = k
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no edge token key configured (--token-private-key-file)")
	}
	if cur == nil {
		earliest := keys[0].ValidFrom
		for _, k := range keys {
			if k.ValidFrom.Before(earliest) {
				earliest = k.ValidFrom
			}
		}
		return nil, fmt.Errorf("no edge token key is valid yet: the earliest --token-private-key-file valid-from is %s", earliest.UTC().Format(time.RFC3339))
	}
	return cur.Key, nil
}

// Config configures a Broker.
type Config struct {
	// TokenKeys sign edge tokens (CurrentTokenKey); at least one, and no
	// two from the same time.
	TokenKeys []TokenKey
	EdgeURLs  []string
	// CDNs are the commercial CDNs that get signed requests next to the
	// edges' URLs, in this order.
	CDNs           []*cdns.CDN
	TokenTTL       time.Duration
	DecisionMaxAge time.Duration
	// Gatekeeper is the identity whose decisions are accepted.
	Gatekeeper spiffeid.ID
	Signer     signerv1.SignerServiceClient
	// Stops is the gatekeeper's stop state; required: without it the
	// broker issues nothing.
	Stops   Stops
	Logger  *slog.Logger
	Metrics *telemetry.Metrics
	Now     func() time.Time
	// Purges is the purge queue; nil: PurgeDigests is Unavailable.
	Purges *purges.Manager
	// Issued records the digests given at least one commercial-CDN URL,
	// before the URLs are returned, so that a kill-switch purge reaches the
	// CDNs for them too (decision 0123). Nil: not recorded (no CDN or no
	// purge queue).
	Issued *issued.Record
	// EdgeKeys are the current trust root's edge token keys (edgekeys.Keys):
	// before an edge URL is made, the key that signs its token must be
	// among them, or every edge would refuse it. Required: nil issues no
	// edge URL.
	EdgeKeys EdgeKeys
	// UnlistedKey counts requests whose edge URLs were refused because the
	// signing key is not valid in the trust root; nil counts none.
	UnlistedKey prometheus.Counter
	// Events logs every issuance (token.issued) before its URLs are
	// returned; a log that cannot be written means no URL. Nil: issuances
	// are not logged (a broker run without a catalog).
	Events EventLog
}

// EventLog appends an event and returns once it is durably sequenced;
// purges.Catalog is one.
type EventLog interface {
	Append(ctx context.Context, typ, subjectDigest string, details []byte) error
}

var _ EventLog = (*purges.Catalog)(nil)

// EdgeKeys gives the trust root's edge token keys at a time, sorted by
// whether their window holds it; edgekeys.Keys is one. An error means the
// root is expired or lists no edge token key.
type EdgeKeys interface {
	TokenKeys(now time.Time) (trustroot.EdgeTokenKeySet, error)
}

var _ EdgeKeys = (*edgekeys.Keys)(nil)

// Stops tells whether something issued at a time for an artifact digest
// and an environment may still be used; stopstate.Watcher is one. Errors
// wrap stopstate.ErrUnknown, ErrStopped or ErrBeforeEpoch.
type Stops interface {
	Check(env, digest string, issued time.Time, precision time.Duration) error
}

var _ Stops = (*stopstate.Watcher)(nil)

// Broker implements cdnbrokerv1.CdnBrokerServiceServer.
type Broker struct {
	cdnbrokerv1.UnimplementedCdnBrokerServiceServer
	cfg Config

	mu      sync.Mutex
	keys    []attest.Key
	fetched time.Time

	// killMu serializes kill-switch expansions; kills is their progress
	// by reference (purge.go).
	killMu sync.Mutex
	kills  map[string]*expansion
}

// keyRefreshInterval is the least time between two key fetches triggered by
// envelopes naming an unknown key, so that junk envelopes cannot turn every
// call into a call to the signer.
const keyRefreshInterval = 30 * time.Second

// New returns a broker.
func New(cfg Config) *Broker { return &Broker{cfg: cfg} }

// errNoDecision is the one "no allow decision" error, attest.VerifyAllow's.
var errNoDecision = attest.ErrNotAllowed

// IssueDownloadUrl checks the decision and returns one signed URL per edge.
func (b *Broker) IssueDownloadUrl(ctx context.Context, req *cdnbrokerv1.IssueDownloadUrlRequest) (*cdnbrokerv1.IssueDownloadUrlResponse, error) {
	d, err := b.check(ctx, req.GetDecisionEnvelope())
	if err != nil {
		if errors.Is(err, errNoDecision) {
			return nil, status.Error(codes.PermissionDenied, err.Error())
		}
		return nil, err
	}
	client, err := ClientRange(req.GetClientIpRange())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	for _, c := range b.cfg.CDNs {
		if err := c.BindsClient(client); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "client_ip_range: %v; no URL issued: ask without a client range, or have this CDN left out of --cdn-config-file", err)
		}
	}
	now := b.cfg.Now()
	exp := now.Add(b.cfg.TokenTTL)
	key, err := CurrentTokenKey(b.cfg.TokenKeys, now)
	if err != nil {
		b.cfg.Logger.ErrorContext(ctx, "no URL issued", slog.Any("error", err))
		return nil, status.Errorf(codes.Unavailable, "%v; no URL issued", err)
	}
	hexDigest, err := digest.Parse(d.Digest)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "decision: %v", err)
	}
	resp := &cdnbrokerv1.IssueDownloadUrlResponse{Digest: d.Digest, ExpiresAt: timestamppb.New(exp)}
	// An edge token only under a key the edges accept; the commercial CDNs
	// sign with keys of their own and are not held up by it.
	unlisted := b.checkListed(ctx, key, now)
	if unlisted == nil {
		tok, err := token.Mint(key, token.Claims{Digest: d.Digest, DecisionID: d.DecisionID, Environment: d.Environment,
			DecidedAt: d.Time, Expires: exp, IssuedAt: now, ClientRange: client})
		if err != nil {
			return nil, status.Error(codes.Internal, "internal error")
		}
		for _, e := range b.cfg.EdgeURLs {
			resp.Urls = append(resp.Urls, strings.TrimSuffix(e, "/")+"/v1/blobs/sha256/"+hexDigest+"?token="+url.QueryEscape(tok))
		}
	}
	resp.CdnUrls = b.mintCDNs(ctx, hexDigest, now, exp, client)
	if unlisted != nil && len(resp.CdnUrls) == 0 {
		return nil, unlisted
	}
	if len(resp.CdnUrls) > 0 && b.cfg.Issued != nil {
		// Before the URLs leave: a CDN may cache the blob from the first
		// request on, and only a recorded digest is purged on a kill switch.
		if err := b.cfg.Issued.Note(ctx, d.Digest); err != nil {
			b.cfg.Logger.ErrorContext(ctx, "refusing: the issued digest cannot be recorded", slog.String("digest", d.Digest), slog.String("file", b.cfg.Issued.Path()), slog.Any("error", err))
			return nil, status.Errorf(codes.Unavailable, "no download URL: the issued-digests record %s cannot be written: check the broker's state directory (disk full, permissions); retry", b.cfg.Issued.Path())
		}
	}
	caller, _ := rpc.CallerID(ctx)
	if b.cfg.Events != nil {
		details, err := json.Marshal(map[string]any{"decision_id": d.DecisionID, "environment": d.Environment,
			"expires": exp.UTC().Format(time.RFC3339), "requested_by": caller.String(), "edges": len(resp.Urls), "cdns": len(resp.CdnUrls)})
		if err != nil {
			return nil, status.Error(codes.Internal, "internal error")
		}
		if err := b.cfg.Events.Append(ctx, tlog.TypeTokenIssued, d.Digest, details); err != nil {
			b.cfg.Logger.WarnContext(ctx, "refusing: the issuance cannot be logged", slog.String("decision_id", d.DecisionID), slog.Any("error", err))
			return nil, status.Error(codes.Unavailable, "no download URL: the issuance cannot be logged in the catalog; retry when the catalog is back")
		}
	}
	b.cfg.Logger.InfoContext(ctx, "issued download URLs", slog.String("digest", d.Digest), slog.String("decision_id", d.DecisionID),
		slog.String("caller", caller.String()), slog.Time("expires", exp), slog.Int("edges", len(resp.Urls)), slog.Int("cdns", len(resp.CdnUrls)))
	return resp, nil
}

// checkListed returns nil if the current trust root lists key's public half
// as an edge token key whose window holds now, and otherwise a
// FailedPrecondition status naming the key: the edges would refuse its
// tokens, and retrying does not help until the root or the broker's key
// changes.
func (b *Broker) checkListed(ctx context.Context, key ed25519.PrivateKey, now time.Time) error {
	msg, ok := b.unlisted(key, now)
	if ok {
		return nil
	}
	if b.cfg.UnlistedKey != nil {
		b.cfg.UnlistedKey.Inc()
	}
	b.cfg.Logger.ErrorContext(ctx, "refusing edge URLs: the edges would refuse the broker's token key", slog.String("reason", msg))
	return status.Errorf(codes.FailedPrecondition, "%s: the edges would refuse it; no edge URL issued: %s", msg, unlistedAdvice)
}

const unlistedAdvice = "list its public key in the signer (--edge-token-public-key-file) and publish a new trust root, or give the broker the listed key (--token-private-key-file)"

// CheckTokenKey logs a warning if the key the broker signs edge tokens
// with now is not valid in the current trust root (its edge URLs would be
// refused); cmd/cdn-broker calls it at start and after every trust
// refresh. It reports whether the key is listed.
func (b *Broker) CheckTokenKey(ctx context.Context) bool {
	now := b.cfg.Now()
	key, err := CurrentTokenKey(b.cfg.TokenKeys, now)
	if err != nil {
		b.cfg.Logger.WarnContext(ctx, "no edge URL can be issued", slog.Any("error", err))
		return false
	}
	msg, ok := b.unlisted(key, now)
	if !ok {
		b.cfg.Logger.WarnContext(ctx, "edge URLs are refused until this is fixed: "+msg+": the edges would refuse it; "+unlistedAdvice)
	}
	return ok
}

// unlisted says why key is not an edge token key of the current trust root
// valid at now; ok if it is.
func (b *Broker) unlisted(key ed25519.PrivateKey, now time.Time) (msg string, ok bool) {
	id := token.KeyID(key.Public().(ed25519.PublicKey))
	at := now.UTC().Format(time.RFC3339)
	if b.cfg.EdgeKeys == nil {
		return fmt.Sprintf("edge token key %s cannot be checked at %s: the broker has no trust root", id, at), false
	}
	set, err := b.cfg.EdgeKeys.TokenKeys(now)
	if err != nil {
		return fmt.Sprintf("edge token key %s cannot be checked at %s: %v", id, at, err), false
	}
	if _, ok := set.Valid[id]; ok {
		return "", true
	}
	if k, ok := set.Outside[id]; ok {
		return fmt.Sprintf("edge token key %s is not listed in trust root v%d for edge tokens at %s (it is listed %s)", id, set.Version, at, k.Window()), false
	}
	return fmt.Sprintf("edge token key %s is not listed in trust root v%d for edge tokens at %s", id, set.Version, at), false
}

// mintCDNs signs the digest's path for every configured CDN. A CDN that
// cannot sign (no key valid now) is left out and logged: the client still
// has the edges and the other CDNs, and no URL is made without a key.
func (b *Broker) mintCDNs(ctx context.Context, hexDigest string, now, exp time.Time, client netip.Prefix) []*cdnbrokerv1.CdnUrl {
	var out []*cdnbrokerv1.CdnUrl
	for _, c := range b.cfg.CDNs {
		s, err := c.MintFor(hexDigest, now, exp, client)
		if err != nil {
			b.cfg.Logger.ErrorContext(ctx, "cannot sign for CDN", slog.String("cdn", c.Name()), slog.Any("error", err))
			continue
		}
		u := &cdnbrokerv1.CdnUrl{Cdn: s.CDN, Kind: s.Kind, Url: s.URL}
		for _, k := range s.Cookies {
			u.Cookies = append(u.Cookies, &cdnbrokerv1.SignedCookie{Name: k.Name, Value: k.Value, Domain: k.Domain, Path: k.Path, ExpiresAt: timestamppb.New(k.Expires)})
		}
		out = append(out, u)
	}
	return out
}

// Narrowest prefix lengths a client range may have: a wider one binds to
// a sixteenth of the IPv4 Internet or a whole region's IPv6 allocation,
// which is no binding worth the name.
const (
	minClientBits4 = 8
	minClientBits6 = 32
)

// ClientRange parses a request's client_ip_range: empty is none; otherwise
// a canonical CIDR (token.ParseClientRange) of at least /8 (IPv4) or /32
// (IPv6).
func ClientRange(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := token.ParseClientRange(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("client_ip_range: %w", err)
	}
	if min := map[bool]int{true: minClientBits4, false: minClientBits6}[p.Addr().Is4()]; p.Bits() < min {
		return netip.Prefix{}, fmt.Errorf("client_ip_range %s is too wide: at most /%d for this address family", p, min)
	}
	return p, nil
}

// check returns the decision if the envelope is a fresh PASSED VSA signed by
// a decision key and issued by the gatekeeper; errors wrap errNoDecision or
// are Unavailable statuses.
func (b *Broker) check(ctx context.Context, raw []byte) (*attest.Decision, error) {
	deny := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", errNoDecision, fmt.Sprintf(format, args...))
	}
	env, err := attest.ParseEnvelope(raw)
	if err != nil {
		return nil, deny("%v", err)
	}
	keys, err := b.keysFor(ctx, env)
	if err != nil {
		return nil, err
	}
	d, _, err := attest.VerifyAllow(env, keys, b.cfg.Gatekeeper.String(), b.cfg.Now(), b.cfg.DecisionMaxAge)
	if err != nil {
		if errors.Is(err, attest.ErrUnknownKey) || errors.Is(err, attest.ErrBadSignature) {
			b.cfg.Metrics.SignatureFailures.WithLabelValues("decision").Inc()
		}
		return nil, err
	}
	// Stops last: only a genuine allow learns about them.
	if b.cfg.Stops == nil {
		return nil, status.Error(codes.Unavailable, "no stop state: the broker issues nothing")
	}
	if err := b.cfg.Stops.Check(d.Environment, d.Digest, d.Time, 0); err != nil {
		if errors.Is(err, stopstate.ErrUnknown) {
			b.cfg.Logger.WarnContext(ctx, "refusing: stop state unknown", slog.Any("error", err))
			return nil, status.Errorf(codes.Unavailable, "no download URL: %v", err)
		}
		b.cfg.Logger.InfoContext(ctx, "refusing: a stop applies", slog.String("decision_id", d.DecisionID), slog.String("environment", d.Environment), slog.Any("error", err))
		return nil, deny("the decision %s for %s: %v", d.DecisionID, d.Digest, err)
	}
	return d, nil
}

// keysFor returns the decision keys, fetching them from the signer on first
// use and again when the envelope names a key not seen yet (rotation).
func (b *Broker) keysFor(ctx context.Context, env *attest.Envelope) ([]attest.Key, error) {
	b.mu.Lock()
	keys, fetched := b.keys, b.fetched
	b.mu.Unlock()
	known := func(ks []attest.Key) bool {
		for _, s := range env.Signatures {
			for _, k := range ks {
				if k.ID == s.KeyID {
					return true
				}
			}
		}
		return false
	}
	if keys != nil && (known(keys) || b.cfg.Now().Sub(fetched) < keyRefreshInterval) {
		return keys, nil
	}
	resp, err := b.cfg.Signer.ListPublicKeys(ctx, &signerv1.ListPublicKeysRequest{})
	if err != nil {
		if keys != nil {
			return keys, nil // verification will say the key is unknown
		}
		return nil, status.Errorf(codes.Unavailable, "cannot get the signer's decision keys: %v: check the signer is running", status.Convert(err).Message())
	}
	var fresh []attest.Key
	for _, pk := range resp.GetKeys() {
		// A revoked decision key vouches for nothing, and a pending one
		// has not signed yet.
		if pk.GetPurpose() != signerv1.KeyPurpose_KEY_PURPOSE_DECISION ||
			pk.GetStatus() == signerv1.KeyStatus_KEY_STATUS_REVOKED || pk.GetStatus() == signerv1.KeyStatus_KEY_STATUS_PENDING {
			continue
		}
		pub, alg, err := attest.ParsePublicKey(pk.GetPublicKeyDer())
		if err != nil {
			b.cfg.Logger.WarnContext(ctx, "skipping unusable signer key", slog.String("key_id", pk.GetKeyId()), slog.Any("error", err))
			continue
		}
		fresh = append(fresh, attest.Key{ID: pk.GetKeyId(), Purpose: attest.PurposeDecision, Algorithm: alg, Public: pub, ValidFrom: pk.GetValidFrom().AsTime()})
	}
	b.mu.Lock()
	b.keys, b.fetched = fresh, b.cfg.Now()
	b.mu.Unlock()
	return fresh, nil
}
