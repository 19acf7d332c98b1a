// Package trustroot is Custody's signed trust root: a versioned, expiring
// list of the keys verifiers trust, signed by a threshold of offline root
// keys as a DSSE envelope, and the rules for moving from one version to the
// next.
package trustroot

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/strictjson"
	"github.com/custody-dev/custody/libs/tlog"
)

// PayloadType is the DSSE payload type of trust-root envelopes.
const PayloadType = "application/vnd.custody.trustroot+json"

// TypeV1 is the value of Root.Type for this format.
const TypeV1 = "https://custody.dev/trustroot/v1"

// Status of a signing key version in a root.
const (
	StatusActive  = "active"
	StatusRetired = "retired"
	StatusRevoked = "revoked"
)

// MaxSize bounds the root JSON this package parses.
const MaxSize = 256 << 10

// maxKeys bounds each key list, and maxRootKeys the root keys: an update
// envelope carries at most 16 signatures (attest's limit), enough for the
// old and the new threshold.
const (
	maxKeys     = 256
	maxRootKeys = 8
)

// Errors, returned wrapped with details.
var (
	// ErrMalformed means the bytes are not a valid root or envelope.
	ErrMalformed = errors.New("malformed trust root")
	// ErrThreshold means not enough valid signatures by distinct root keys.
	ErrThreshold = errors.New("trust root is not signed by enough root keys")
	// ErrRollback means a version at or below the trusted one was offered.
	ErrRollback = errors.New("trust root rollback")
	// ErrVersionGap means a version more than one above the trusted one was
	// offered on its own: the versions between must be applied first.
	ErrVersionGap = errors.New("trust root version gap")
	// ErrExpired means the root's expiry has passed.
	ErrExpired = errors.New("trust root expired")
	// ErrUnknownKey means a key id is not listed in the root.
	ErrUnknownKey = errors.New("key is not in the trust root")
	// ErrKeyNotValid means a listed key's signature falls outside its
	// validity window or at or after its revocation.
	ErrKeyNotValid = errors.New("key is not valid at that time")
)

// Root is one version of the trust root.
type Root struct {
	Type          string         `json:"type"`
	Version       int64          `json:"version"`
	Expires       time.Time      `json:"expires"`
	Threshold     int            `json:"threshold"`
	RootKeys      []Key          `json:"root_keys"`
	SigningKeys   []SigningKey   `json:"signing_keys"`
	LogKeys       []LogKey       `json:"log_keys"`
	EdgeTokenKeys []EdgeTokenKey `json:"edge_token_keys"`
}

// EdgeTokenKey is an Ed25519 key of the cdn-broker's edge tokens with the
// window in which edges accept tokens signed by it: from ValidFrom (if set)
// until, not including, ValidUntil (if set). A key being rotated out keeps
// a ValidUntil of its last token's expiry plus the transition window.
type EdgeTokenKey struct {
	Key
	ValidFrom  *time.Time `json:"valid_from,omitempty"`
	ValidUntil *time.Time `json:"valid_until,omitempty"`
}

// Key is a public key.
type Key struct {
	// ID is attest.KeyID of the public key.
	ID string `json:"id"`
	// Algorithm is attest.AlgECDSAP256 or attest.AlgEd25519.
	Algorithm string `json:"algorithm"`
	// PublicKey is PKIX DER (base64 in JSON).
	PublicKey []byte `json:"public_key"`
}

// SigningKey is one version of a signer key.
type SigningKey struct {
	Key
	// Purpose is attest.PurposeArtifact, attest.PurposeDecision or
	// attest.PurposeBackup.
	Purpose string `json:"purpose"`
	// Name is the key's name in the signer's back end.
	Name    string `json:"name"`
	Version int    `json:"version"`
	// Channels are the channels an artifact key signs; empty means every
	// channel that no other artifact key names (Root.SignsChannel).
	Channels   []string   `json:"channels,omitempty"`
	ValidFrom  time.Time  `json:"valid_from"`
	ValidUntil *time.Time `json:"valid_until,omitempty"`
	Status     string     `json:"status"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
}

// LogKey is the checkpoint key of one transparency log.
type LogKey struct {
	// Origin is the checkpoint's origin line.
	Origin string `json:"origin"`
	// VerifierKey verifies the log's checkpoints (tlog.OpenCosigned): a
	// C2SP cosignature/v1 key of the signer (named apart from the origin),
	// or an Ed25519 note key named after the origin.
	VerifierKey string `json:"verifier_key"`
}

// Validate returns every problem at once, each wrapping ErrMalformed.
func (r *Root) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...))
	}
	if r.Type != TypeV1 {
		bad("type %q, want %s", quote.Prefix(r.Type), TypeV1)
	}
	if r.Version < 1 {
		bad("version %d, want 1 or more", r.Version)
	}
	if r.Expires.IsZero() {
		bad("expires is missing")
	}
	switch n := len(r.RootKeys); {
	case n == 0:
		bad("no root keys")
	case n > maxRootKeys:
		bad("%d root keys, at most %d", n, maxRootKeys)
	}
	if r.Threshold < 1 || r.Threshold > len(r.RootKeys) {
		bad("threshold %d, want 1 to the number of root keys (%d)", r.Threshold, len(r.RootKeys))
	}
	for _, l := range []struct {
		what string
		n    int
	}{{"signing", len(r.SigningKeys)}, {"log", len(r.LogKeys)}, {"edge token", len(r.EdgeTokenKeys)}} {
		if l.n > maxKeys {
			bad("%d %s keys, at most %d", l.n, l.what, maxKeys)
		}
	}
	seen := map[string]bool{}
	for i, k := range r.RootKeys {
		if err := k.check(); err != nil {
			bad("root key %d: %v", i, err)
		}
		if seen[k.ID] {
			bad("root key %s listed twice", quote.Prefix(k.ID))
		}
		seen[k.ID] = true
	}
	seen = map[string]bool{}
	versions := map[string]bool{}
	for i, k := range r.SigningKeys {
		for _, p := range k.problems() {
			bad("signing key %d (%s): %s", i, quote.Prefix(k.ID), p)
		}
		if seen[k.ID] {
			bad("signing key %s listed twice", quote.Prefix(k.ID))
		}
		seen[k.ID] = true
		nv := fmt.Sprintf("%s/v%d", k.Name, k.Version)
		if versions[nv] {
			bad("signing key version %s listed twice", quote.Prefix(nv))
		}
		versions[nv] = true
	}
	origins := map[string]bool{}
	for i, l := range r.LogKeys {
		if l.Origin == "" || strings.ContainsAny(l.Origin, "\n") {
			bad("log key %d: origin %q: want a checkpoint origin line", i, quote.Prefix(l.Origin))
		}
		if err := tlog.CheckVerifierKey(l.Origin, l.VerifierKey); err != nil {
			bad("log key %d (%s): not a note verifier key of that log: %v", i, quote.Prefix(l.Origin), err)
		}
		if origins[l.Origin] {
			bad("log origin %q listed twice", quote.Prefix(l.Origin))
		}
		origins[l.Origin] = true
	}
	seen = map[string]bool{}
	for i, k := range r.EdgeTokenKeys {
		if err := k.check(); err != nil {
			bad("edge token key %d: %v", i, err)
		} else if k.Algorithm != attest.AlgEd25519 {
			bad("edge token key %s: algorithm %s, edge tokens are %s", quote.Prefix(k.ID), k.Algorithm, attest.AlgEd25519)
		}
		if k.ValidFrom != nil && k.ValidUntil != nil && !k.ValidUntil.After(*k.ValidFrom) {
			bad("edge token key %s: valid_until is not after valid_from", quote.Prefix(k.ID))
		}
		if seen[k.ID] {
			bad("edge token key %s listed twice", quote.Prefix(k.ID))
		}
		seen[k.ID] = true
	}
	return errors.Join(errs...)
}

// check verifies that the key parses, is of its algorithm and has its id.
func (k Key) check() error {
	pub, alg, err := attest.ParsePublicKey(k.PublicKey)
	if err != nil {
		return err
	}
	if alg != k.Algorithm {
		return fmt.Errorf("listed as %q but the key is %s", quote.Prefix(k.Algorithm), alg)
	}
	id, err := attest.KeyID(pub)
	if err != nil {
		return err
	}
	if id != k.ID {
		return fmt.Errorf("id %q is not the key's id %s", quote.Prefix(k.ID), id)
	}
	return nil
}

func (k SigningKey) problems() []string {
	var ps []string
	if err := k.Key.check(); err != nil {
		ps = append(ps, err.Error())
	}
	switch k.Purpose {
	case attest.PurposeArtifact:
	case attest.PurposeDecision, attest.PurposeBackup:
		if len(k.Channels) > 0 {
			ps = append(ps, fmt.Sprintf("a %s key has no channels", k.Purpose))
		}
	default:
		ps = append(ps, fmt.Sprintf("purpose %q, want %s, %s or %s", quote.Prefix(k.Purpose), attest.PurposeArtifact, attest.PurposeDecision, attest.PurposeBackup))
	}
	if k.Name == "" || k.Version < 1 {
		ps = append(ps, "name and a version of 1 or more are required")
	}
	for _, c := range k.Channels {
		if c == "" {
			ps = append(ps, "empty channel name")
		}
	}
	if k.ValidFrom.IsZero() {
		ps = append(ps, "valid_from is missing")
	}
	if k.ValidUntil != nil && !k.ValidUntil.After(k.ValidFrom) {
		ps = append(ps, "valid_until is not after valid_from")
	}
	switch k.Status {
	case StatusActive, StatusRetired:
		if k.RevokedAt != nil {
			ps = append(ps, fmt.Sprintf("status %s with a revoked_at", k.Status))
		}
	case StatusRevoked:
		if k.RevokedAt == nil {
			ps = append(ps, "revoked without revoked_at")
		}
	default:
		ps = append(ps, fmt.Sprintf("status %q, want %s, %s or %s", quote.Prefix(k.Status), StatusActive, StatusRetired, StatusRevoked))
	}
	return ps
}

// Marshal validates r and returns its canonical JSON: compact, fields in
// the order of the struct, times in UTC, empty lists as []. That is the DSSE
// payload signed by root keys.
func (r *Root) Marshal() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	c := r.canonical()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode trust root: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// canonical returns a copy with UTC times and non-nil lists.
func (r *Root) canonical() *Root {
	c := *r
	c.Expires = r.Expires.UTC()
	c.RootKeys = orEmpty(slices.Clone(r.RootKeys))
	c.LogKeys = orEmpty(slices.Clone(r.LogKeys))
	c.EdgeTokenKeys = orEmpty(slices.Clone(r.EdgeTokenKeys))
	for i := range c.EdgeTokenKeys {
		k := &c.EdgeTokenKeys[i]
		k.ValidFrom, k.ValidUntil = utcPtr(k.ValidFrom), utcPtr(k.ValidUntil)
	}
	c.SigningKeys = orEmpty(slices.Clone(r.SigningKeys))
	for i := range c.SigningKeys {
		k := &c.SigningKeys[i]
		k.ValidFrom = k.ValidFrom.UTC()
		k.ValidUntil = utcPtr(k.ValidUntil)
		k.RevokedAt = utcPtr(k.RevokedAt)
		if len(k.Channels) == 0 {
			k.Channels = nil
		}
	}
	return &c
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// ParseUnsigned parses and validates a root's JSON (a draft, or an
// envelope's payload). It is strict: at most MaxSize bytes of one JSON
// object, unknown fields refused. Errors wrap ErrMalformed.
func ParseUnsigned(b []byte) (*Root, error) {
	var r Root
	if err := strictjson.Decode(b, MaxSize, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Keys returns the signing keys of purpose as attest keys, for
// attest.Envelope.Verify. It includes retired and revoked versions: whether
// a signature by one counts is CheckSignedAt's question.
func (r *Root) Keys(purpose string) []attest.Key {
	var out []attest.Key
	for _, k := range r.SigningKeys {
		if k.Purpose != purpose {
			continue
		}
		pub, alg, err := attest.ParsePublicKey(k.PublicKey)
		if err != nil || alg != k.Algorithm {
			continue // Validate refuses such roots
		}
		out = append(out, attest.Key{ID: k.ID, Purpose: k.Purpose, Algorithm: alg, Public: pub, ValidFrom: k.ValidFrom})
	}
	return out
}

// SignsChannel reports whether artifact key k may sign artifacts of
// channel: a key that names channels signs those; a key that names none
// signs every channel that no artifact key of r names (so a channel with a
// key of its own, and the approvals that guard it, cannot be bypassed with
// the default key).
func (r *Root) SignsChannel(k SigningKey, channel string) bool {
	if len(k.Channels) > 0 {
		return slices.Contains(k.Channels, channel)
	}
	for _, o := range r.SigningKeys {
		if o.Purpose == attest.PurposeArtifact && slices.Contains(o.Channels, channel) {
			return false
		}
	}
	return true
}

// ChannelError explains why k may not sign channel (see SignsChannel).
func (r *Root) ChannelError(k SigningKey, channel string) error {
	if r.SignsChannel(k, channel) {
		return nil
	}
	name := fmt.Sprintf("key %s (%s v%d)", k.ID, k.Name, k.Version)
	if len(k.Channels) > 0 {
		return fmt.Errorf("%w: %s signs channels %s, not %q", ErrKeyNotValid, name, strings.Join(k.Channels, ", "), quote.Prefix(channel))
	}
	return fmt.Errorf("%w: channel %q has a key of its own in trust root v%d; %s signs only channels without one", ErrKeyNotValid, quote.Prefix(channel), r.Version, name)
}

// EdgeTokenKeySet is what a root's edge token keys are at one time: the
// keys whose window holds it, and the keys listed but outside their window.
type EdgeTokenKeySet struct {
	// Version is the root's version.
	Version int64
	// Valid are the keys whose window holds the time, by id (token.KeyID
	// and attest.KeyID agree): the keys an edge accepts tokens from.
	Valid map[string]ed25519.PublicKey
	// Outside are the keys listed whose window does not hold the time, by
	// id: a token signed by one is refused, and the window says why. Nil
	// if there are none.
	Outside map[string]EdgeTokenKey
}

// EdgeTokenKeysAt sorts the edge token keys by whether their window holds
// now: one lookup, for the edge (which keys verify tokens) and the broker
// (whether the key it signs with is one of them). A key before its
// ValidFrom or at or after its ValidUntil is in Outside, not Valid.
func (r *Root) EdgeTokenKeysAt(now time.Time) EdgeTokenKeySet {
	out := EdgeTokenKeySet{Version: r.Version, Valid: map[string]ed25519.PublicKey{}}
	for _, k := range r.EdgeTokenKeys {
		pub, alg, err := attest.ParsePublicKey(k.PublicKey)
		if err != nil || alg != attest.AlgEd25519 {
			continue // Validate refuses such roots
		}
		ed, ok := pub.(ed25519.PublicKey)
		if !ok {
			continue
		}
		if !k.ValidAt(now) {
			if out.Outside == nil {
				out.Outside = map[string]EdgeTokenKey{}
			}
			out.Outside[k.ID] = k
			continue
		}
		out.Valid[k.ID] = ed
	}
	return out
}

// Window describes k's validity window, times in UTC (RFC 3339), e.g.
// "valid from 2026-01-01T00:00:00Z until 2026-02-01T00:00:00Z".
func (k EdgeTokenKey) Window() string {
	var b strings.Builder
	b.WriteString("valid")
	if k.ValidFrom != nil {
		b.WriteString(" from " + k.ValidFrom.UTC().Format(time.RFC3339))
	}
	if k.ValidUntil != nil {
		b.WriteString(" until " + k.ValidUntil.UTC().Format(time.RFC3339))
	}
	if k.ValidFrom == nil && k.ValidUntil == nil {
		b.WriteString(" always")
	}
	return b.String()
}

// ValidAt reports whether now is within k's window.
func (k EdgeTokenKey) ValidAt(now time.Time) bool {
	return (k.ValidFrom == nil || !now.Before(*k.ValidFrom)) && (k.ValidUntil == nil || now.Before(*k.ValidUntil))
}

// SigningKey returns the signing key version with id.
func (r *Root) SigningKey(id string) (SigningKey, bool) {
	i := slices.IndexFunc(r.SigningKeys, func(k SigningKey) bool { return k.ID == id })
	if i < 0 {
		return SigningKey{}, false
	}
	return r.SigningKeys[i], true
}

// LogVerifier returns the note verifier key of the log with origin.
func (r *Root) LogVerifier(origin string) (string, bool) {
	i := slices.IndexFunc(r.LogKeys, func(l LogKey) bool { return l.Origin == origin })
	if i < 0 {
		return "", false
	}
	return r.LogKeys[i].VerifierKey, true
}

// CheckSignedAt says whether a signature by key id made at time at is
// valid under r: the key is listed, at is within [ValidFrom, ValidUntil],
// and the key was not revoked at or before at. Errors wrap ErrUnknownKey or
// ErrKeyNotValid and name the key and its window or revocation.
func (r *Root) CheckSignedAt(id string, at time.Time) error {
	k, ok := r.SigningKey(id)
	if !ok {
		return fmt.Errorf("%w: key %s is not in trust root v%d", ErrUnknownKey, quote.Prefix(id), r.Version)
	}
	name := fmt.Sprintf("%s %s v%d (%s)", k.Purpose, k.Name, k.Version, k.ID)
	at = at.UTC()
	switch {
	case k.RevokedAt != nil && !at.Before(*k.RevokedAt):
		return fmt.Errorf("%w: %s was revoked at %s; the signature was logged at %s", ErrKeyNotValid, name, stamp(*k.RevokedAt), stamp(at))
	case at.Before(k.ValidFrom):
		return fmt.Errorf("%w: %s is valid from %s; the signature was logged earlier, at %s", ErrKeyNotValid, name, stamp(k.ValidFrom), stamp(at))
	case k.ValidUntil != nil && at.After(*k.ValidUntil):
		return fmt.Errorf("%w: %s was valid until %s; the signature was logged later, at %s", ErrKeyNotValid, name, stamp(*k.ValidUntil), stamp(at))
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
