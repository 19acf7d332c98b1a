package stop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
)

// Bounds of artifact revocations (decision 0104).
const (
	// MaxRevocations bounds the revocations the state file keeps: they are
	// final, so they are never dropped from it.
	MaxRevocations = 20_000
	// MaxListedRevocations bounds the revocations GetStopState lists;
	// beyond it the overflow time refuses everything issued before the
	// newest one left out.
	MaxListedRevocations = 10_000
	// DefaultRevocationRetention is how long a revocation is listed in the
	// stop state: longer than any decision (10 minutes) or token (24h) can
	// be used. The gatekeeper itself denies the digest for good.
	DefaultRevocationRetention = 48 * time.Hour
)

// ErrFull means MaxRevocations artifacts are revoked already.
var ErrFull = errors.New("too many artifact revocations")

// Revocation is one revoked artifact. It is final: nothing removes it.
type Revocation struct {
	Digest    string    `json:"digest"`
	EpochTime time.Time `json:"epoch_time"`
	Reason    string    `json:"reason"`
	By        string    `json:"by"`
	// LogIndex is the index of its artifact.revoked entry; -1 while it is
	// not logged.
	LogIndex int64 `json:"log_index"`
}

// Denial is why an admission of the revoked digest is denied: what, when,
// who, why and where it is logged.
func (r Revocation) Denial() string {
	where := "its artifact.revoked event is not logged yet"
	if r.LogIndex >= 0 {
		where = fmt.Sprintf("artifact.revoked log index %d", r.LogIndex)
	}
	// The reason comes last: a long one is what a bounded reason cuts.
	return fmt.Sprintf("artifact %s was revoked at %s by %s (%s): it is denied in every environment, for good; admit another version. Reason: %s",
		r.Digest, r.EpochTime.UTC().Format(time.RFC3339Nano), r.By, where, r.Reason)
}

// Revoked returns why an admission of dgst must be denied, or "" if it is
// not revoked. It implements admission.Stops.
func (s *Store) Revoked(dgst string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if i, ok := s.revoked[dgst]; ok {
		return s.st.Revoked[i].Denial()
	}
	return ""
}

// RevocationEpochs returns the revocations to list in the stop state at
// now: those younger than the retention, oldest first, at most
// MaxListedRevocations (the newest); and, if more were younger, the epoch
// of the newest left out, which refuses everything issued at or before it.
func (s *Store) RevocationEpochs(now time.Time) ([]Revocation, time.Time) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rs := s.st.Revoked // sorted by epoch (Revoke appends later epochs)
	from := sort.Search(len(rs), func(i int) bool { return now.Sub(rs[i].EpochTime) <= s.cfg.RevocationRetention })
	var overflow time.Time
	if n := len(rs) - from; n > MaxListedRevocations {
		from = len(rs) - MaxListedRevocations
		overflow = rs[from-1].EpochTime
	}
	return append([]Revocation(nil), rs[from:]...), overflow
}

// CheckRevocationReason returns reason trimmed, or an error wrapping
// ErrInvalid if it is empty, longer than 512 bytes, not UTF-8, or holds
// control or format characters: it is shown in every denial of the digest,
// for good, so nothing invisible or direction-changing either.
func CheckRevocationReason(reason string) (string, error) {
	reason, err := checkReason(reason)
	if err != nil {
		return "", err
	}
	if strings.ContainsFunc(reason, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) {
		return "", fmt.Errorf("%w: the reason holds control or format characters: want printable text", ErrInvalid)
	}
	return reason, nil
}

// RevokeResult is the outcome of Revoke.
type RevokeResult struct {
	Revocation Revocation
	// Already is set when dgst was revoked before the call.
	Already bool
}

// Revoke revokes dgst for good, by caller (an admin or security identity):
// it is persisted and applies (admissions deny it, the stop state lists
// it) before its artifact.revoked event is logged. Revoking a revoked
// digest returns the first revocation with Already set and logs nothing,
// unless its event is not logged yet: then it is logged now. An error
// wrapping ErrUnavailable with a non-nil result means the revocation
// applies but its event could not be logged: call again to log it.
func (s *Store) Revoke(ctx context.Context, dgst, reason, caller string) (*RevokeResult, error) {
	if !digest.Valid(dgst) {
		return nil, fmt.Errorf("%w: digest %q: want sha256:<64 lowercase hex>", ErrInvalid, quote.Prefix(dgst))
	}
	reason, err := CheckRevocationReason(reason)
	if err != nil {
		return nil, err
	}
	s.op.Lock()
	defer s.op.Unlock()

	s.mu.Lock()
	if i, ok := s.revoked[dgst]; ok {
		r := s.st.Revoked[i]
		s.mu.Unlock()
		if r.LogIndex >= 0 {
			return &RevokeResult{Revocation: r, Already: true}, nil
		}
		return s.logRevocation(ctx, r, true)
	}
	if len(s.st.Revoked) >= MaxRevocations {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %d artifacts are revoked already, the limit: use the kill switch or a pause while the limit is raised", ErrFull, MaxRevocations)
	}
	next := s.st.clone()
	// Taken under the write lock, as a stop's epoch: an admission that read
	// the state before saw no revocation and is dated earlier.
	now := s.cfg.Now().UTC()
	if n := len(next.Revoked); n > 0 && !now.After(next.Revoked[n-1].EpochTime) {
		now = next.Revoked[n-1].EpochTime.Add(time.Nanosecond) // epochs only move forward
	}
	r := Revocation{Digest: dgst, EpochTime: now, Reason: reason, By: caller, LogIndex: -1}
	next.Revoked = append(next.Revoked, r)
	if err := s.persist(next); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	s.st = next
	s.revoked[dgst] = len(next.Revoked) - 1
	s.mu.Unlock()
	s.revocations.Inc()
	s.cfg.Logger.WarnContext(ctx, "artifact revoked", slog.String("digest", dgst), slog.Time("epoch_time", now),
		slog.String("reason", reason), slog.String("by", caller))
	return s.logRevocation(ctx, r, false)
}

// logRevocation logs r's event and saves its log index; s.op is held.
func (s *Store) logRevocation(ctx context.Context, r Revocation, already bool) (*RevokeResult, error) {
	res := &RevokeResult{Revocation: r, Already: already}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(revokedDetails{Digest: r.Digest, EpochTime: r.EpochTime, Reason: r.Reason, By: r.By}); err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	idx, err := s.cfg.Log.AppendEvent(lctx, admission.Event{Type: tlog.TypeArtifactRevoked, SubjectDigest: r.Digest, Details: bytes.TrimSpace(buf.Bytes())})
	if err != nil {
		return res, &Failure{Public: fmt.Sprintf("artifact %s is REVOKED but its artifact.revoked event could not be logged (the catalog is unavailable); run the command again to log it", r.Digest), Err: err}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.st.clone()
	i := s.revoked[r.Digest]
	next.Revoked[i].LogIndex = idx
	if err := s.persist(next); err != nil {
		// The event is logged and the revocation applies; only its index
		// is not saved, so denials do not name it until a retry saves it.
		s.cfg.Logger.ErrorContext(ctx, "artifact revocation logged but its log index not saved", slog.String("digest", r.Digest), slog.Int64("log_index", idx), slog.Any("error", err))
		res.Revocation.LogIndex = idx
		return res, nil
	}
	s.st = next
	res.Revocation = next.Revoked[i]
	return res, nil
}

// revokedDetails are the details of an artifact.revoked entry.
type revokedDetails struct {
	Digest    string    `json:"digest"`
	EpochTime time.Time `json:"epoch_time"`
	Reason    string    `json:"reason"`
	By        string    `json:"by"`
}

// indexRevocations checks the loaded revocations and indexes them by
// digest.
func (s *Store) indexRevocations() error {
	s.revoked = make(map[string]int, len(s.st.Revoked))
	if len(s.st.Revoked) > MaxRevocations {
		return fmt.Errorf("%d artifact revocations, more than %d", len(s.st.Revoked), MaxRevocations)
	}
	for i, r := range s.st.Revoked {
		if !digest.Valid(r.Digest) || r.EpochTime.IsZero() || r.LogIndex < -1 {
			return fmt.Errorf("artifact revocation %d (%q) is malformed", i, quote.Prefix(r.Digest))
		}
		if i > 0 && !r.EpochTime.After(s.st.Revoked[i-1].EpochTime) {
			return fmt.Errorf("artifact revocation %d (%s) is out of order", i, r.Digest)
		}
		if _, dup := s.revoked[r.Digest]; dup {
			return fmt.Errorf("artifact %s is revoked twice", r.Digest)
		}
		s.revoked[r.Digest] = i
	}
	return nil
}
