// Package approvals holds artifact signatures on protected channels until a
// quorum of distinct approvers has approved that exact digest, channel and key.
package approvals

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/signer/internal/audit"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

// Errors of Approve, Reject and List, mapped to status codes by the handler.
// Await and Signed return errors wrapping server.ErrNotApproved or
// server.ErrApprovalsUnavailable instead, for the signer's handler.
var (
	ErrInvalid  = errors.New("invalid request")
	ErrNotFound = errors.New("no such approval request")
	ErrDenied   = errors.New("not allowed")
	// ErrClosed: the request is rejected or expired and takes no more
	// approvals or rejections.
	ErrClosed = errors.New("approval request is closed")
)

// Event types appended to the catalog's log (libs/tlog's table says the
// signer alone may write them).
const (
	EventRequested = tlog.TypeApprovalRequested
	EventApproved  = tlog.TypeApprovalApproved
	EventRejected  = tlog.TypeApprovalRejected
	EventSigned    = tlog.TypeApprovalSigned
)

// MaxReasonLen bounds a rejection reason.
const MaxReasonLen = 1024

// Logger appends audit events; *audit.Catalog implements it. Log returns
// nil only once the event is in the log.
type Logger interface {
	Log(ctx context.Context, e audit.Event) error
}

var _ Logger = (*audit.Catalog)(nil)

// Clock is the service's time; tests pass a fake one.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once d has passed.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer of a Clock.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// SystemClock is the wall clock.
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
func (systemClock) NewTimer(d time.Duration) Timer {
	return systemTimer{time.NewTimer(d)}
}

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.t.C }
func (t systemTimer) Stop() bool          { return t.t.Stop() }

// State is where a request is. Expired is never stored: a request is expired
// once its ExpiresAt has passed, whatever it stored.
type State string

// Request states.
const (
	Pending  State = "pending"
	Approved State = "approved"
	Rejected State = "rejected"
	Signed   State = "signed"
	Expired  State = "expired"
)

// Approval is one approver's approval of a request.
type Approval struct {
	Approver   string    `json:"approver"`
	ApprovedAt time.Time `json:"approved_at"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// Request is one signing request on a protected channel. Values held by the
// Service are never modified in place: a change replaces the request.
type Request struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Version      string     `json:"version"`
	Digest       string     `json:"digest"`
	Channel      string     `json:"channel"`
	KeyName      string     `json:"key_name"`
	BuilderID    string     `json:"builder_id"`
	SourceRepo   string     `json:"source_repo"`
	SourceCommit string     `json:"source_commit"`
	State        State      `json:"state"`
	Quorum       int        `json:"quorum"`
	Approvals    []Approval `json:"approvals"`
	CreatedAt    time.Time  `json:"created_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	RejectedBy   string     `json:"rejected_by,omitempty"`
	RejectReason string     `json:"reject_reason,omitempty"`
}

func (r *Request) clone() *Request {
	c := *r
	c.Approvals = slices.Clone(r.Approvals)
	return &c
}

// stateAt is the request's state at now.
func (r *Request) stateAt(now time.Time) State {
	if r.State != Rejected && !now.Before(r.ExpiresAt) {
		return Expired
	}
	return r.State
}

// open reports whether a signing request for the same subject joins r.
func (r *Request) open(now time.Time) bool {
	st := r.stateAt(now)
	return st == Pending || st == Approved || st == Signed
}

func (r *Request) is(s server.ApprovalSubject) bool {
	return r.subject() == s
}

func (r *Request) subject() server.ApprovalSubject {
	return server.ApprovalSubject{Name: r.Name, Version: r.Version, Digest: r.Digest, Channel: r.Channel, KeyName: r.KeyName,
		BuilderID: r.BuilderID, SourceRepo: r.SourceRepo, SourceCommit: r.SourceCommit}
}

// Config configures a Service; see docs/signer.md, "Approvals".
type Config struct {
	// Quorum is the number of distinct approvals each channel needs;
	// channels not listed need none.
	Quorum map[string]int
	// Approvers restricts the approver group to these IDs; empty means every
	// ID under /approver/ of TrustDomain.
	Approvers   []spiffeid.ID
	TrustDomain spiffeid.TrustDomain
	// ApprovalTTL is how long an approval counts; RequestTTL how long a
	// request lives (and an approved one may be signed); MaxWait how long
	// one SignArtifact call waits.
	ApprovalTTL, RequestTTL, MaxWait time.Duration
	// MaxPending bounds the pending requests; 0 means DefaultMaxPending.
	MaxPending int
	// StateDir holds the state file; required when a channel needs
	// approvals.
	StateDir string

	Clock  Clock     // nil: SystemClock
	Rand   io.Reader // request ids; nil: crypto/rand
	Logger *slog.Logger
}

// Defaults of the signer's flags.
const (
	DefaultApprovalTTL = 24 * time.Hour
	DefaultRequestTTL  = 72 * time.Hour
	DefaultMaxWait     = 10 * time.Minute
	DefaultMaxPending  = 10000
)

// Protected reports whether some channel needs approvals.
func (c *Config) Protected() bool {
	for _, q := range c.Quorum {
		if q > 0 {
			return true
		}
	}
	return false
}

// Validate returns every problem with c at once, naming the signer's flags.
func (c *Config) Validate() error {
	var errs []error
	for _, ch := range sortedKeys(c.Quorum) {
		q := c.Quorum[ch]
		if q < 0 || q > maxQuorum {
			errs = append(errs, fmt.Errorf("--quorum %s=%d: want 0 to %d", ch, q, maxQuorum))
		}
		if len(c.Approvers) > 0 && q > len(c.Approvers) {
			errs = append(errs, fmt.Errorf("--quorum %s=%d exceeds the %d approvers of --approvers: it could never be reached", ch, q, len(c.Approvers)))
		}
	}
	for _, id := range c.Approvers {
		if id.TrustDomain() != c.TrustDomain {
			errs = append(errs, fmt.Errorf("--approvers %s: not in trust domain %s", id, c.TrustDomain.Name()))
		}
	}
	for flag, d := range map[string]time.Duration{"--approval-ttl": c.ApprovalTTL, "--approval-request-ttl": c.RequestTTL, "--approval-max-wait": c.MaxWait} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: want a positive duration", flag, d))
		}
	}
	if c.MaxPending < 0 {
		errs = append(errs, fmt.Errorf("max pending %d: want 0 (default) or more", c.MaxPending))
	}
	if c.Protected() && c.StateDir == "" {
		errs = append(errs, errors.New("--state-dir is required when a channel needs approvals (--quorum): pending approvals must survive a restart"))
	}
	return errors.Join(errs...)
}

const maxQuorum = 100

// logTimeout bounds how long one change waits for the audit log.
const logTimeout = 30 * time.Second

// Service keeps approval requests and their approvals. It is safe for
// concurrent use.
type Service struct {
	cfg    Config
	events Logger
	path   string // state file, "" when nothing needs approvals

	// write serializes changes: log the event, write the state file, then
	// publish the new request under mu.
	write sync.Mutex

	mu       sync.Mutex
	requests map[string]*Request
	changed  map[string]chan struct{} // closed and replaced on every change of a request
}

var _ server.Approvals = (*Service)(nil)

// Open validates cfg and loads the state file from cfg.StateDir, creating
// the directory if needed. A state file that cannot be parsed is an error,
// never silently replaced. events receives every event; it may be nil only
// when no channel needs approvals.
func Open(cfg Config, events Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Protected() && events == nil {
		return nil, errors.New("--catalog-addr is required when a channel needs approvals (--quorum): every approval is logged")
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock()
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	s := &Service{cfg: cfg, events: events, requests: map[string]*Request{}, changed: map[string]chan struct{}{}}
	if cfg.StateDir == "" {
		return s, nil
	}
	s.path = statePath(cfg.StateDir)
	reqs, err := loadState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	for _, r := range reqs {
		s.requests[r.ID] = r
	}
	return s, nil
}

// inGroup reports whether id may approve and reject.
func (s *Service) inGroup(id spiffeid.ID) bool {
	if len(s.cfg.Approvers) > 0 {
		return slices.Contains(s.cfg.Approvers, id)
	}
	return rpc.Under{TrustDomain: s.cfg.TrustDomain, Prefix: "/approver"}.Allows(id)
}

// need is the number of approvals r needs: its quorum when opened, or the
// channel's quorum now if that was raised since.
func (s *Service) need(r *Request) int {
	return max(r.Quorum, s.cfg.Quorum[r.Channel])
}

// counting returns the approvals of r that count at now: unexpired, by a
// member of the approver group other than the builder.
func (s *Service) counting(r *Request, now time.Time) []Approval {
	var out []Approval
	for _, a := range r.Approvals {
		id, err := spiffeid.FromString(a.Approver)
		if err != nil || !now.Before(a.ExpiresAt) || a.Approver == r.BuilderID || !s.inGroup(id) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// find returns the open request for subject, or nil. Caller holds mu.
func (s *Service) find(subject server.ApprovalSubject, now time.Time) *Request {
	for _, r := range s.requests {
		if r.is(subject) && r.open(now) {
			return r
		}
	}
	return nil
}

func (s *Service) get(id string) *Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[id]
}

// changedCh returns the channel closed at the next change of request id.
// Caller holds mu.
func (s *Service) changedCh(id string) chan struct{} {
	ch, ok := s.changed[id]
	if !ok {
		ch = make(chan struct{})
		s.changed[id] = ch
	}
	return ch
}

// Await blocks until subject may be signed: at once when its channel needs
// no approvals, else once the open request for subject (opened now if there
// is none) is approved. A request approved earlier releases a retry without
// new approvals for as long as it lives. The wait ends without a quorum
// (server.ErrNotApproved) when the request is rejected or expires, ctx ends
// or MaxWait passes; the request stays, and a retry joins it.
// Rejection implements server.Approvals: a rejected request makes its
// name@version unsignable on every channel, so that bytes refused for
// prod cannot be re-uploaded to staging and signed there. It wraps
// server.ErrNotApproved and names the rejection.
func (s *Service) Rejection(subject server.ApprovalSubject) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.requests {
		if r.State == Rejected && r.Name == subject.Name && r.Version == subject.Version {
			return fmt.Errorf("%w: %s@%s was rejected on channel %s by %s (approval request %s, %s): %q; a rejection is final for that name@version on every channel: publish the fix as a new version",
				server.ErrNotApproved, r.Name, r.Version, r.Channel, r.RejectedBy, r.ID, r.Digest, r.RejectReason)
		}
	}
	return nil
}

// Protected implements server.Approvals.
func (s *Service) Protected(channel string) bool { return s.cfg.Quorum[channel] > 0 }

func (s *Service) Await(ctx context.Context, subject server.ApprovalSubject) error {
	if s.cfg.Quorum[subject.Channel] == 0 {
		return nil
	}
	id, err := s.join(ctx, subject)
	if err != nil {
		return err
	}
	wait := s.cfg.Clock.NewTimer(s.cfg.MaxWait)
	defer wait.Stop()
	var expiry Timer
	for {
		s.mu.Lock()
		r := s.requests[id]
		ch := s.changedCh(id)
		s.mu.Unlock()
		now := s.cfg.Clock.Now()
		if r == nil { // dropped long after it expired
			return fmt.Errorf("%w: approval request %s expired: retry the upload to open a new request", server.ErrNotApproved, id)
		}
		switch r.stateAt(now) {
		case Approved, Signed:
			return nil
		case Rejected:
			return fmt.Errorf("%w: approval request %s for %s@%s (%s) on channel %s was rejected by %s: %q",
				server.ErrNotApproved, r.ID, r.Name, r.Version, r.Digest, r.Channel, r.RejectedBy, r.RejectReason)
		case Expired:
			return fmt.Errorf("%w: approval request %s for %s@%s (%s) on channel %s expired at %s with %d of %d approvals: retry the upload to open a new request",
				server.ErrNotApproved, r.ID, r.Name, r.Version, r.Digest, r.Channel, r.ExpiresAt.UTC().Format(time.RFC3339), len(s.counting(r, now)), s.need(r))
		}
		if expiry == nil {
			expiry = s.cfg.Clock.NewTimer(r.ExpiresAt.Sub(now))
			defer expiry.Stop()
		}
		select {
		case <-ch:
		case <-expiry.C():
		case <-wait.C():
			return s.waitEnded(id, fmt.Sprintf("the signer waits at most %s", s.cfg.MaxWait))
		case <-ctx.Done():
			return s.waitEnded(id, "the upload stopped waiting")
		}
	}
}

func (s *Service) waitEnded(id, why string) error {
	r := s.get(id)
	if r == nil {
		return fmt.Errorf("%w: approval request %s expired: retry the upload to open a new request", server.ErrNotApproved, id)
	}
	return fmt.Errorf("%w: approval request %s for %s@%s (%s) on channel %s has %d of %d approvals (%s): "+
		"approvers run `custody approvals list` and `custody approve %s`; then retry the upload: it joins the same request",
		server.ErrNotApproved, r.ID, r.Name, r.Version, r.Digest, r.Channel, len(s.counting(r, s.cfg.Clock.Now())), s.need(r), why, r.ID)
}

// join returns the id of the open request for subject, opening one if there
// is none.
func (s *Service) join(ctx context.Context, subject server.ApprovalSubject) (string, error) {
	s.write.Lock()
	defer s.write.Unlock()
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	r := s.find(subject, now)
	pending := 0
	for _, x := range s.requests {
		if x.stateAt(now) == Pending {
			pending++
		}
	}
	s.mu.Unlock()
	if r != nil {
		return r.ID, nil
	}
	if pending >= s.cfg.MaxPending {
		return "", fmt.Errorf("%w: %d approval requests are pending, the limit: approvers must approve or reject some, then retry the upload",
			server.ErrApprovalsUnavailable, pending)
	}
	var b [8]byte
	if _, err := io.ReadFull(s.cfg.Rand, b[:]); err != nil {
		return "", fmt.Errorf("%w: request id: %w", server.ErrApprovalsUnavailable, err)
	}
	r = &Request{
		ID: hex.EncodeToString(b[:]), Name: subject.Name, Version: subject.Version, Digest: subject.Digest, Channel: subject.Channel,
		KeyName: subject.KeyName, BuilderID: subject.BuilderID, SourceRepo: subject.SourceRepo, SourceCommit: subject.SourceCommit,
		State: Pending, Quorum: s.cfg.Quorum[subject.Channel], CreatedAt: now, ExpiresAt: now.Add(s.cfg.RequestTTL),
	}
	if err := s.change(ctx, r, EventRequested, nil); err != nil {
		return "", fmt.Errorf("open approval request for %s on channel %s: %w", subject.Digest, subject.Channel, err)
	}
	return r.ID, nil
}

// Signed records that subject was signed with keyID after Await released
// it. It fails, and the signature must not be returned, if the request was
// rejected or expired meanwhile or the event cannot be logged.
func (s *Service) Signed(ctx context.Context, subject server.ApprovalSubject, keyID string) error {
	if s.cfg.Quorum[subject.Channel] == 0 {
		return nil
	}
	s.write.Lock()
	defer s.write.Unlock()
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	r := s.find(subject, now)
	s.mu.Unlock()
	if r == nil || r.stateAt(now) == Pending {
		return fmt.Errorf("%w: the approval request for %s on channel %s is no longer approved (rejected or expired before it was signed): retry the upload",
			server.ErrNotApproved, subject.Digest, subject.Channel)
	}
	n := r.clone()
	n.State = Signed
	if err := s.change(ctx, n, EventSigned, map[string]any{"key_id": keyID}); err != nil {
		return fmt.Errorf("record the signature of approval request %s: %w", r.ID, err)
	}
	return nil
}

// Approve records approver's approval of request id and returns the request.
// Approving twice counts once; approving a request that already has its
// quorum changes nothing. The builder of the artifact cannot approve it,
// whatever the approver group. The approval counts only once its event is
// in the log: if logging fails, nothing is recorded and the error wraps
// server.ErrApprovalsUnavailable.
func (s *Service) Approve(ctx context.Context, id string, approver spiffeid.ID) (Request, error) {
	if !s.inGroup(approver) {
		return Request{}, fmt.Errorf("%w: %s is not in the approver group", ErrDenied, approver)
	}
	if !idPattern.MatchString(id) {
		return Request{}, fmt.Errorf("%w: request id %q: want 16 lowercase hex digits, as `custody approvals list` shows", ErrInvalid, quote.Prefix(id))
	}
	s.write.Lock()
	defer s.write.Unlock()
	now := s.cfg.Clock.Now()
	r := s.get(id)
	if r == nil {
		return Request{}, fmt.Errorf("%w: %q: list them with `custody approvals list --all`", ErrNotFound, id)
	}
	if approver.String() == r.BuilderID {
		return Request{}, fmt.Errorf("%w: %s built %s@%s and cannot approve its own request %s", ErrDenied, approver, r.Name, r.Version, r.ID)
	}
	switch st := r.stateAt(now); st {
	case Approved, Signed:
		return s.view(r, now), nil
	case Rejected, Expired:
		return Request{}, fmt.Errorf("%w: request %s is %s: the builder retries the upload to open a new request", ErrClosed, r.ID, st)
	}
	for _, a := range s.counting(r, now) {
		if a.Approver == approver.String() {
			return s.view(r, now), nil
		}
	}
	n := r.clone()
	// Drop expired approvals (and the approver's own, renewed here), so that
	// a request holds at most one approval per approver that counts.
	n.Approvals = slices.DeleteFunc(n.Approvals, func(a Approval) bool { return a.Approver == approver.String() || !now.Before(a.ExpiresAt) })
	n.Approvals = append(n.Approvals, Approval{Approver: approver.String(), ApprovedAt: now, ExpiresAt: now.Add(s.cfg.ApprovalTTL)})
	count := len(s.counting(n, now))
	if count >= s.need(n) {
		n.State = Approved
	}
	details := map[string]any{"approver": approver.String(), "approvals": count, "approval_expires_at": now.Add(s.cfg.ApprovalTTL)}
	if err := s.change(ctx, n, EventApproved, details); err != nil {
		return Request{}, fmt.Errorf("approve request %s: %w", r.ID, err)
	}
	return s.view(n, now), nil
}

// Reject ends request id: waiting and later signing requests for it fail
// with reason. Pending and approved (not yet signed) requests can be
// rejected. Like Approve, it is recorded only once its event is logged.
func (s *Service) Reject(ctx context.Context, id string, approver spiffeid.ID, reason string) (Request, error) {
	reason = strings.TrimSpace(reason)
	if reason == "" || len(reason) > MaxReasonLen {
		return Request{}, fmt.Errorf("%w: a reason of 1 to %d bytes is required: it is recorded in the log", ErrInvalid, MaxReasonLen)
	}
	if !s.inGroup(approver) {
		return Request{}, fmt.Errorf("%w: %s is not in the approver group", ErrDenied, approver)
	}
	if !idPattern.MatchString(id) {
		return Request{}, fmt.Errorf("%w: request id %q: want 16 lowercase hex digits, as `custody approvals list` shows", ErrInvalid, quote.Prefix(id))
	}
	s.write.Lock()
	defer s.write.Unlock()
	now := s.cfg.Clock.Now()
	r := s.get(id)
	if r == nil {
		return Request{}, fmt.Errorf("%w: %q: list them with `custody approvals list --all`", ErrNotFound, id)
	}
	if st := r.stateAt(now); st != Pending && st != Approved {
		return Request{}, fmt.Errorf("%w: request %s is %s and can no longer be rejected", ErrClosed, r.ID, st)
	}
	n := r.clone()
	n.State, n.RejectedBy, n.RejectReason = Rejected, approver.String(), reason
	if err := s.change(ctx, n, EventRejected, map[string]any{"rejected_by": approver.String(), "reason": reason}); err != nil {
		return Request{}, fmt.Errorf("reject request %s: %w", r.ID, err)
	}
	return s.view(n, now), nil
}

// List returns the pending requests, or all that are kept when all is set,
// oldest first, with their state at this moment. A pending request lists
// the approvals that count now.
func (s *Service) List(all bool) []Request {
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	var out []Request
	for _, r := range s.requests {
		if all || r.stateAt(now) == Pending {
			out = append(out, s.view(r, now))
		}
	}
	s.mu.Unlock()
	sortRequests(out)
	return out
}

// view is r as shown at now.
func (s *Service) view(r *Request, now time.Time) Request {
	v := *r.clone()
	v.State = r.stateAt(now)
	v.Quorum = s.need(r)
	if v.State == Pending {
		v.Approvals = s.counting(r, now)
	}
	return v
}

// change logs event about n, writes the state with n replacing the request
// of the same id, and publishes n to waiters. Nothing changes unless both the
// log and the write succeeded. Caller holds s.write.
func (s *Service) change(ctx context.Context, n *Request, event string, details map[string]any) error {
	now := s.cfg.Clock.Now()
	if details == nil {
		details = map[string]any{}
	}
	details["request_id"] = n.ID
	details["name"], details["version"], details["channel"], details["key_name"] = n.Name, n.Version, n.Channel, n.KeyName
	details["builder_id"], details["source_repo"], details["source_commit"] = n.BuilderID, n.SourceRepo, n.SourceCommit
	details["quorum"], details["state"] = s.need(n), n.State
	if event == EventRequested {
		details["expires_at"] = n.ExpiresAt
	}
	if event == EventSigned {
		var approvers []string
		for _, a := range n.Approvals {
			approvers = append(approvers, a.Approver)
		}
		details["approvers"] = approvers
	}
	// Changes wait for each other (s.write): a hung catalog must not hold
	// them all forever.
	lctx, cancel := context.WithTimeout(ctx, logTimeout)
	defer cancel()
	if err := s.events.Log(lctx, audit.Event{Type: event, SubjectDigest: n.Digest, Details: details}); err != nil {
		return fmt.Errorf("%w: %w", server.ErrApprovalsUnavailable, err)
	}
	s.mu.Lock()
	keep := make([]*Request, 0, len(s.requests)+1)
	for id, r := range s.requests {
		// Closed requests stay listed for one more request lifetime;
		// rejected ones for good: a rejection is final for its
		// name@version (Rejection).
		if id != n.ID && (r.State == Rejected || now.Before(r.ExpiresAt.Add(s.cfg.RequestTTL))) {
			keep = append(keep, r)
		}
	}
	keep = append(keep, n)
	s.mu.Unlock()
	if s.path != "" {
		if err := writeState(s.path, keep); err != nil {
			return fmt.Errorf("%w: %w", server.ErrApprovalsUnavailable, err)
		}
	}
	s.mu.Lock()
	s.requests = make(map[string]*Request, len(keep))
	for _, r := range keep {
		s.requests[r.ID] = r
	}
	for id, ch := range s.changed {
		if id == n.ID || s.requests[id] == nil {
			close(ch)
			delete(s.changed, id)
		}
	}
	s.mu.Unlock()
	s.cfg.Logger.InfoContext(ctx, event, slog.String("request_id", n.ID), slog.String("digest", n.Digest),
		slog.String("channel", n.Channel), slog.String("key_name", n.KeyName), slog.String("state", string(n.State)))
	return nil
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortRequests(rs []Request) {
	slices.SortFunc(rs, func(a, b Request) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}
