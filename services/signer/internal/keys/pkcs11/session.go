package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/custody-dev/custody/services/signer/internal/keys"
)

// Sessions, token loss and recovery, and the process-wide module registry.

// errTokenMissing: no present token carries the label, or the one that did
// no longer answers.
var errTokenMissing = errors.New("token not found")

// errModuleDown: the module failed to initialize again.
var errModuleDown = errors.New("module not initialized")

var errClosed = errors.New("back end closed")

type class int

const (
	classOther class = iota
	classStale       // the session, login or object handle went stale: retry on a fresh session
	classGone        // the token or device went away: look for it again, maybe re-initialize
	classPIN         // the token refused the PIN
)

func classify(err error) class {
	if errors.Is(err, errTokenMissing) || errors.Is(err, errModuleDown) {
		return classGone
	}
	var e p11.Error
	if !errors.As(err, &e) {
		return classOther
	}
	switch e {
	case p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED, p11.CKR_USER_NOT_LOGGED_IN,
		p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_KEY_HANDLE_INVALID, p11.CKR_OPERATION_ACTIVE,
		p11.CKR_OPERATION_NOT_INITIALIZED:
		return classStale
	case p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_TOKEN_NOT_RECOGNIZED, p11.CKR_DEVICE_REMOVED,
		p11.CKR_DEVICE_ERROR, p11.CKR_DEVICE_MEMORY, p11.CKR_SLOT_ID_INVALID,
		p11.CKR_CRYPTOKI_NOT_INITIALIZED, p11.CKR_GENERAL_ERROR, p11.CKR_SESSION_COUNT,
		p11.CKR_USER_PIN_NOT_INITIALIZED:
		return classGone
	case p11.CKR_PIN_INCORRECT, p11.CKR_PIN_INVALID, p11.CKR_PIN_LEN_RANGE, p11.CKR_PIN_EXPIRED,
		p11.CKR_PIN_LOCKED:
		return classPIN
	}
	return classOther
}

// with runs fn on a pooled, logged-in session. If the first attempt fails
// because the session, a handle or the token went stale, it drops the
// Backend's sessions and handles, re-initializes the module if the token is
// gone (rate-limited), and tries once more.
func (b *Backend) with(ctx context.Context, fn func(*session) error) error {
	epoch, gen, err := b.once(ctx, fn)
	if err == nil {
		b.recovered()
		return nil
	}
	if c := classify(err); c != classStale && c != classGone {
		return err
	}
	b.recover(epoch, gen, err)
	if nr := (noRetry{}); errors.As(err, &nr) {
		return err
	}
	epoch, gen, err = b.once(ctx, fn)
	if err == nil {
		b.recovered()
		return nil
	}
	if c := classify(err); c == classStale || c == classGone {
		b.recover(epoch, gen, err)
	}
	return err
}

// once runs fn on one session and returns the module epoch and Backend
// generation it ran in.
func (b *Backend) once(ctx context.Context, fn func(*session) error) (epoch, gen uint64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	select {
	case <-b.done:
		return 0, 0, errClosed
	default:
	}
	select {
	case b.sem <- struct{}{}:
	case <-b.done:
		return 0, 0, errClosed
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	defer func() { <-b.sem }()
	b.mod.mu.RLock()
	defer b.mod.mu.RUnlock()
	epoch, gen = b.mod.epoch.Load(), b.gen.Load()
	if !b.mod.ok {
		return epoch, gen, errModuleDown
	}
	s, err := b.session(epoch, gen)
	if err != nil {
		return epoch, gen, err
	}
	err = fn(s)
	if err != nil && classify(err) == classOther {
		var e p11.Error
		if errors.As(err, &e) {
			// An unexpected failure: if the token has gone, say that instead.
			if terr := b.checkToken(s); terr != nil {
				err = fmt.Errorf("%w (after %w)", terr, err)
			}
		}
	}
	b.put(s, err, epoch)
	return epoch, gen, err
}

// session takes an idle session of this epoch and generation or opens one.
// The caller holds b.mod.mu for reading and a b.sem slot.
func (b *Backend) session(epoch, gen uint64) (*session, error) {
	for {
		select {
		case s := <-b.idle:
			if s.epoch == epoch && s.gen == gen {
				return s, nil
			}
			b.discard(s, epoch)
		default:
			return b.openSession(epoch, gen)
		}
	}
}

func (b *Backend) openSession(epoch, gen uint64) (*session, error) {
	ctx := b.mod.ctx
	slot, err := b.slot(epoch, gen)
	if err != nil {
		return nil, err
	}
	h, err := ctx.OpenSession(slot, sessionFlags)
	if err != nil {
		return nil, err
	}
	if err := b.login(h); err != nil {
		_ = ctx.CloseSession(h)
		return nil, err
	}
	return &session{h: h, slot: slot, epoch: epoch, gen: gen}, nil
}

// login logs the application in through h. Login state is per token and
// application, so the first session logs all of them in; the token may
// have logged out (all sessions closed, token reinserted), hence a try per
// new session.
func (b *Backend) login(h p11.SessionHandle) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pinErr != nil {
		return b.pinErr
	}
	err := b.mod.ctx.Login(h, p11.CKU_USER, b.cfg.PIN)
	if errors.Is(err, p11.Error(p11.CKR_USER_ALREADY_LOGGED_IN)) {
		return nil
	}
	if classify(err) == classPIN {
		// Trying a wrong PIN again would lock the token on most HSMs.
		b.pinErr = err
	}
	return err
}

// slot returns the token's slot, looking for the token when the last
// search was for another epoch or generation.
func (b *Backend) slot(epoch, gen uint64) (uint, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t := b.tok; t.found && t.epoch == epoch && t.gen == gen {
		return t.slot, nil
	}
	slot, err := b.findToken()
	b.tok = tokenState{slot: slot, epoch: epoch, gen: gen, found: err == nil}
	return slot, err
}

func (b *Backend) findToken() (uint, error) {
	ctx := b.mod.ctx
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, err
	}
	var found []uint
	var info p11.TokenInfo
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err == nil && strings.TrimRight(ti.Label, " ") == b.cfg.TokenLabel {
			found, info = append(found, s), ti
		}
	}
	switch {
	case len(found) == 0:
		return 0, errTokenMissing
	case len(found) > 1:
		return 0, fmt.Errorf("%w: pkcs11: %d tokens are labelled %q: give the signer's token a unique label", keys.ErrUnavailable, len(found), b.cfg.TokenLabel)
	case info.Flags&p11.CKF_TOKEN_INITIALIZED == 0:
		return 0, fmt.Errorf("%w: pkcs11: token %q is not initialized", keys.ErrUnavailable, b.cfg.TokenLabel)
	case info.Flags&p11.CKF_USER_PIN_LOCKED != 0:
		return 0, fmt.Errorf("%w: pkcs11: the user PIN of token %q is locked: unlock it with the SO PIN", keys.ErrUnavailable, b.cfg.TokenLabel)
	}
	return found[0], nil
}

// checkToken returns errTokenMissing if s's token no longer answers as the
// configured token, nil if it does.
func (b *Backend) checkToken(s *session) error {
	ti, err := b.mod.ctx.GetTokenInfo(s.slot)
	if err != nil {
		return fmt.Errorf("%w: %w", errTokenMissing, err)
	}
	if strings.TrimRight(ti.Label, " ") != b.cfg.TokenLabel {
		return fmt.Errorf("%w: slot %d now holds token %q", errTokenMissing, s.slot, ti.Label)
	}
	return nil
}

// put returns s to the pool, or drops it if a PKCS#11 call on it failed
// (it may be mid-operation) or the Backend closed.
func (b *Backend) put(s *session, err error, epoch uint64) {
	var e p11.Error
	switch {
	case classify(err) == classGone || errors.Is(err, p11.Error(p11.CKR_SESSION_HANDLE_INVALID)) ||
		errors.Is(err, p11.Error(p11.CKR_SESSION_CLOSED)):
		// The module may have closed the session already and, once it
		// hands the number out again, closing it would close another
		// caller's session.
		return
	case errors.As(err, &e):
		b.discard(s, epoch)
		return
	}
	select {
	case <-b.done:
		b.discard(s, epoch)
		return
	default:
	}
	select {
	case b.idle <- s:
	default:
		b.discard(s, epoch)
	}
}

// discard closes s if it belongs to the current module epoch; handles from
// an earlier epoch mean nothing now.
func (b *Backend) discard(s *session, epoch uint64) {
	if s.epoch == epoch {
		_ = b.mod.ctx.CloseSession(s.h)
	}
}

// recover makes the next attempt start afresh: new sessions, handles and
// token search; if the token seems gone, it re-initializes the module.
func (b *Backend) recover(epoch, gen uint64, cause error) {
	b.gen.CompareAndSwap(gen, gen+1)
	if b.degraded.CompareAndSwap(false, true) {
		b.log.Warn("pkcs11 token not usable; failing closed and looking for it again", slog.Any("error", cause))
	}
	if classify(cause) == classGone && b.mod.reinit(epoch, b.cfg.RecoverInterval) {
		b.log.Warn("pkcs11 module re-initialized to look for the token again", slog.String("module", b.cfg.ModulePath))
	}
}

func (b *Backend) recovered() {
	if b.degraded.Load() && b.degraded.CompareAndSwap(true, false) {
		b.log.Info("pkcs11 token usable again")
	}
}

// wrap turns an internal failure into an error for callers: sentinels from
// package keys, with what to check.
func (b *Backend) wrap(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	label := b.cfg.TokenLabel
	switch {
	case errors.Is(err, keys.ErrNotFound), errors.Is(err, keys.ErrExists),
		errors.Is(err, keys.ErrInvalid), errors.Is(err, keys.ErrUnavailable):
		return err
	case errors.Is(err, errClosed):
		return fmt.Errorf("%w: pkcs11: %s: the back end is closed", keys.ErrUnavailable, what)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("pkcs11: %s: %w", what, err)
	}
	switch classify(err) {
	case classStale, classGone:
		return fmt.Errorf("%w: pkcs11: token %q not available (%s: %v): check the HSM and the token label/PIN", keys.ErrUnavailable, label, what, err)
	case classPIN:
		return fmt.Errorf("%w: pkcs11: token %q refused the PIN (%s: %v): check the PIN file and restart; the signer does not retry a refused PIN, so as not to lock the token", keys.ErrUnavailable, label, what, err)
	}
	return fmt.Errorf("pkcs11: %s on token %q: %w", what, label, err)
}

// A module is one loaded PKCS#11 library, shared by every Backend on the
// same path: a library can be initialized once per process.
type module struct {
	path string
	refs int // guarded by modules.mu

	// mu is held for reading around every use of ctx, and for writing to
	// finalize or re-initialize it.
	mu       sync.RWMutex
	ctx      *p11.Ctx
	ok       bool // initialized; guarded by mu
	owned    bool // this package initialized it, so may finalize it
	epoch    atomic.Uint64
	lastInit atomic.Int64 // unix nanoseconds
}

var modules = struct {
	mu sync.Mutex
	m  map[string]*module
}{m: map[string]*module{}}

func openModule(path string) (*module, error) {
	modules.mu.Lock()
	defer modules.mu.Unlock()
	if m := modules.m[path]; m != nil {
		m.refs++
		return m, nil
	}
	ctx := p11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("%w: pkcs11: cannot load module %s: check that it exists and is a PKCS#11 library for this platform", keys.ErrUnavailable, path)
	}
	m := &module{path: path, refs: 1, ctx: ctx, ok: true, owned: true}
	if err := ctx.Initialize(); errors.Is(err, p11.Error(p11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		m.owned = false // someone else in this process initialized it
	} else if err != nil {
		ctx.Destroy()
		return nil, fmt.Errorf("%w: pkcs11: initialize module %s: %v", keys.ErrUnavailable, path, err)
	}
	m.epoch.Store(1)
	m.lastInit.Store(time.Now().UnixNano())
	modules.m[path] = m
	return m, nil
}

// release drops a reference; the last one finalizes and unloads the module.
func (m *module) release() {
	modules.mu.Lock()
	defer modules.mu.Unlock()
	if m.refs--; m.refs > 0 {
		return
	}
	delete(modules.m, m.path)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ok && m.owned {
		_ = m.ctx.Finalize()
	}
	m.ok = false
	m.ctx.Destroy()
}

// reinit finalizes and initializes the module again, which makes modules
// such as SoftHSM2 look for their tokens again. It does nothing if the
// module was re-initialized since epoch seen or less than interval ago.
// It waits for the calls in flight on every Backend sharing the module.
func (m *module) reinit(seen uint64, interval time.Duration) bool {
	recent := func() bool { return time.Since(time.Unix(0, m.lastInit.Load())) < interval }
	if !m.owned || m.epoch.Load() != seen || recent() {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.epoch.Load() != seen || recent() {
		return false
	}
	if m.ok {
		_ = m.ctx.Finalize()
	}
	err := m.ctx.Initialize()
	m.ok = err == nil || errors.Is(err, p11.Error(p11.CKR_CRYPTOKI_ALREADY_INITIALIZED))
	m.lastInit.Store(time.Now().UnixNano())
	m.epoch.Add(1)
	return true
}
