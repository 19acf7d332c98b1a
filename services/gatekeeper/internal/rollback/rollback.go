// Package rollback keeps the gatekeeper's rollback approvals durably
// (decision 0078): admitting a lower version of a name to an environment
// than the highest deployed there is denied unless a quorum of distinct
// approvers, none of them the requester, approved that name, from-version,
// to-version and environment, and the approval has not expired. Every
// step is logged before it counts.
package rollback

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/custody-dev/custody/libs/artifact"
	"github.com/custody-dev/custody/libs/daemon"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/strictjson"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
)

var (
	// ErrInvalid means the request is malformed.
	ErrInvalid = errors.New("invalid rollback request")
	// ErrNotFound means there is no such request (or it expired).
	ErrNotFound = errors.New("no such rollback request")
	// ErrRefused means the caller may not approve this request: it is
	// theirs, or they approved it already.
	ErrRefused = errors.New("rollback approval refused")
	// ErrUnavailable means the state could not be persisted or the event
	// logged; nothing changed.
	ErrUnavailable = errors.New("rollback state unavailable")
)

const (
	maxReasonLen = 512
	maxFileSize  = 4 << 20
	// maxOpen bounds the requests held (pending or granted, unexpired).
	maxOpen = 256
	// MaxTTL bounds how long an approval may stay valid.
	MaxTTL = 7 * 24 * time.Hour
)

// Request is one rollback request and its approvals.
type Request struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	From        string    `json:"from_version"`
	To          string    `json:"to_version"`
	Environment string    `json:"environment"`
	Reason      string    `json:"reason"`
	RequestedBy string    `json:"requested_by"`
	RequestedAt time.Time `json:"requested_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	// Approvals are the distinct approvers' SPIFFE IDs, sorted.
	Approvals []string  `json:"approvals"`
	Quorum    int       `json:"quorum"`
	GrantedAt time.Time `json:"granted_at"`
}

// Granted reports whether r reached its quorum.
func (r Request) Granted() bool { return !r.GrantedAt.IsZero() }

// Logger appends audit events; admission.Catalog is one.
type Logger interface {
	AppendEvent(ctx context.Context, e admission.Event) (int64, error)
}

// Config configures a Store.
type Config struct {
	// File is the state file; it is created if missing.
	File string
	// Quorum is the number of distinct approvers, other than the
	// requester, that grants a rollback; at least 1.
	Quorum int
	// TTL is how long a request, and the rollback it grants, stays valid
	// from the request; at most MaxTTL.
	TTL    time.Duration
	Log    Logger
	Logger *slog.Logger
	Now    func() time.Time
}

// Store is the durable set of rollback requests. It is safe for
// concurrent use.
type Store struct {
	cfg Config
	op  sync.Mutex // serializes changes, held while logging
	mu  sync.RWMutex
	st  map[string]Request
}

// Open loads the state file, or starts empty if it does not exist. A file
// that cannot be read or parsed is an error.
func Open(cfg Config) (*Store, error) {
	var errs []error
	if cfg.File == "" {
		errs = append(errs, errors.New("a state file is required"))
	}
	if cfg.Quorum < 1 {
		errs = append(errs, errors.New("the rollback quorum must be at least 1"))
	}
	if cfg.TTL <= 0 || cfg.TTL > MaxTTL {
		errs = append(errs, fmt.Errorf("the rollback approval TTL must be in (0, %s]", MaxTTL))
	}
	if cfg.Log == nil || cfg.Logger == nil {
		errs = append(errs, errors.New("log and logger are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("rollback config: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Store{cfg: cfg, st: map[string]Request{}}
	b, err := os.ReadFile(cfg.File)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read rollback state %s: %w", cfg.File, err)
	default:
		var list []Request
		if err := strictjson.Decode(b, maxFileSize, &list); err != nil {
			return nil, fmt.Errorf("rollback state %s is corrupt (%w): restore it from a backup; deleting it drops every rollback approval", cfg.File, err)
		}
		for _, r := range list {
			s.st[r.ID] = r
		}
	}
	return s, nil
}

// List returns the unexpired requests, oldest first.
func (s *Store) List() []Request {
	now := s.cfg.Now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return live(s.st, now)
}

func live(st map[string]Request, now time.Time) []Request {
	out := make([]Request, 0, len(st))
	for _, r := range st {
		if now.Before(r.ExpiresAt) {
			r.Approvals = slices.Clone(r.Approvals)
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].RequestedAt.Equal(out[j].RequestedAt) {
			return out[i].RequestedAt.Before(out[j].RequestedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Highest returns the highest of versions by Compare; "" if there are none.
func Highest(versions []string) string {
	var h string
	for i, v := range versions {
		if i == 0 || Compare(v, h) > 0 {
			h = v
		}
	}
	return h
}

// Denial returns why admitting name@version to env must be denied given
// the versions deployed there: "" when version is not lower than the
// highest of them, or a granted, unexpired rollback of name from that
// highest version to version in env exists. It implements
// admission.Rollbacks.
func (s *Store) Denial(name, version, env string, deployed []string) string {
	highest := Highest(deployed)
	if highest == "" || Compare(version, highest) >= 0 {
		return ""
	}
	if _, ok := s.Granted(name, version, env, highest); ok {
		return ""
	}
	return fmt.Sprintf("%s@%s is lower than %s@%s, the highest version deployed to %s: a rollback needs %d approvals: custody rollback request %s --from %s --to %s --env %s --reason TEXT",
		name, version, name, highest, env, s.cfg.Quorum, name, highest, version, env)
}

var _ admission.Rollbacks = (*Store)(nil)

// Granted returns the granted, unexpired rollback of name from highest to
// version in env, if there is one.
func (s *Store) Granted(name, version, env, highest string) (Request, bool) {
	now := s.cfg.Now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, r := range s.st {
		if r.Granted() && now.Before(r.ExpiresAt) && r.Name == name && r.From == highest && r.To == version && r.Environment == env {
			return r, true
		}
	}
	return Request{}, false
}

// Result is the outcome of a change.
type Result struct {
	Request  Request
	LogIndex int64
}

// Request asks for a rollback of name from from to to in env, by caller. The
// event is logged before the request exists.
func (s *Store) Request(ctx context.Context, name, from, to, env, reason, caller string) (*Result, error) {
	reason = strings.TrimSpace(reason)
	switch {
	case !artifact.ValidName(name):
		return nil, fmt.Errorf("%w: name %q is not a valid artifact name", ErrInvalid, quote.Prefix(name))
	case !artifact.ValidVersion(from) || !artifact.ValidVersion(to):
		return nil, fmt.Errorf("%w: --from and --to must be valid versions", ErrInvalid)
	case !artifact.ValidEnvironment(env):
		return nil, fmt.Errorf("%w: environment %q: want a name like prod or staging", ErrInvalid, quote.Prefix(env))
	case Compare(to, from) >= 0:
		return nil, fmt.Errorf("%w: %s is not lower than %s: admitting it needs no rollback approval", ErrInvalid, to, from)
	case reason == "" || len(reason) > maxReasonLen || !utf8.ValidString(reason) || strings.ContainsFunc(reason, isControl):
		return nil, fmt.Errorf("%w: a reason is required: at most %d bytes of printable UTF-8", ErrInvalid, maxReasonLen)
	}
	var idb [12]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return nil, err
	}
	s.op.Lock()
	defer s.op.Unlock()
	now := s.cfg.Now().UTC()
	next := s.prune(now)
	if len(next) >= maxOpen {
		return nil, fmt.Errorf("%w: %d rollback requests are open already, the limit; let some expire", ErrInvalid, maxOpen)
	}
	r := Request{ID: "rb-" + hex.EncodeToString(idb[:]), Name: name, From: from, To: to, Environment: env, Reason: reason,
		RequestedBy: caller, RequestedAt: now, ExpiresAt: now.Add(s.cfg.TTL), Approvals: []string{}, Quorum: s.cfg.Quorum}
	idx, err := s.log(ctx, tlog.TypeRollbackRequested, r, caller)
	if err != nil {
		return nil, fmt.Errorf("%w: the rollback request could not be logged (the catalog is unavailable), so it was not made; retry: %w", ErrUnavailable, err)
	}
	next[r.ID] = r
	if err := s.commit(next); err != nil {
		return nil, err
	}
	s.cfg.Logger.WarnContext(ctx, "rollback requested", slog.String("id", r.ID), slog.String("name", name),
		slog.String("from", from), slog.String("to", to), slog.String("environment", env), slog.String("by", caller))
	return &Result{Request: r, LogIndex: idx}, nil
}

// Approve records caller's approval of request id. The requester may not
// approve their own request and nobody approves twice. When the distinct
// approvals reach the quorum the rollback is granted until the request
// expires. The approval is logged before it counts.
func (s *Store) Approve(ctx context.Context, id, caller string) (*Result, error) {
	s.op.Lock()
	defer s.op.Unlock()
	now := s.cfg.Now().UTC()
	next := s.prune(now)
	r, ok := next[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q (it may have expired): see custody rollback list", ErrNotFound, quote.Prefix(id))
	}
	switch {
	case caller == r.RequestedBy:
		return nil, fmt.Errorf("%w: %s requested this rollback and may not approve it", ErrRefused, caller)
	case slices.Contains(r.Approvals, caller):
		return nil, fmt.Errorf("%w: %s approved this rollback already; another approver must", ErrRefused, caller)
	case r.Granted():
		return nil, fmt.Errorf("%w: this rollback is granted already", ErrRefused)
	}
	r.Approvals = append(slices.Clone(r.Approvals), caller)
	sort.Strings(r.Approvals)
	typ := tlog.TypeRollbackApproved
	if len(r.Approvals) >= r.Quorum {
		typ = tlog.TypeRollbackGranted
		r.GrantedAt = now
	}
	idx, err := s.log(ctx, typ, r, caller)
	if err != nil {
		return nil, fmt.Errorf("%w: the approval could not be logged (the catalog is unavailable), so it does not count; retry: %w", ErrUnavailable, err)
	}
	next[id] = r
	if err := s.commit(next); err != nil {
		return nil, err
	}
	s.cfg.Logger.WarnContext(ctx, "rollback approved", slog.String("id", id), slog.String("by", caller),
		slog.Int("approvals", len(r.Approvals)), slog.Int("quorum", r.Quorum), slog.Bool("granted", r.Granted()))
	return &Result{Request: r, LogIndex: idx}, nil
}

// prune returns a copy of the state without expired requests; s.op held.
func (s *Store) prune(now time.Time) map[string]Request {
	s.mu.RLock()
	defer s.mu.RUnlock()
	next := make(map[string]Request, len(s.st))
	for k, r := range s.st {
		if now.Before(r.ExpiresAt) {
			next[k] = r
		}
	}
	return next
}

// commit persists next atomically and makes it current; s.op held.
func (s *Store) commit(next map[string]Request) error {
	b, err := json.MarshalIndent(live(next, time.Time{}), "", "  ")
	if err != nil {
		return err
	}
	err = daemon.WriteFileAtomic(s.cfg.File, append(b, '\n'), 0o600)
	if err != nil {
		return fmt.Errorf("%w: the rollback state could not be saved; check the gatekeeper's disk: %w", ErrUnavailable, err)
	}
	s.mu.Lock()
	s.st = next
	s.mu.Unlock()
	return nil
}

type eventDetails struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	From        string    `json:"from_version"`
	To          string    `json:"to_version"`
	Environment string    `json:"environment"`
	Reason      string    `json:"reason"`
	RequestedBy string    `json:"requested_by"`
	ExpiresAt   time.Time `json:"expires_at"`
	Approvals   []string  `json:"approvals"`
	Quorum      int       `json:"quorum"`
	By          string    `json:"by"`
}

func (s *Store) log(ctx context.Context, typ string, r Request, caller string) (int64, error) {
	d := eventDetails{ID: r.ID, Name: r.Name, From: r.From, To: r.To, Environment: r.Environment, Reason: r.Reason,
		RequestedBy: r.RequestedBy, ExpiresAt: r.ExpiresAt, Approvals: r.Approvals, Quorum: r.Quorum, By: caller}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return s.cfg.Log.AppendEvent(ctx, admission.Event{Type: typ, Details: bytes.TrimSpace(buf.Bytes())})
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
