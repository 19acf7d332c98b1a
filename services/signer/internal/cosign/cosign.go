// Package cosign co-signs the catalog's log checkpoints with a key of the
// signer's key back end, after checking that each extends the last one
// co-signed.
package cosign

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"

	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/signer/internal/keys"
)

// StateFileName is the co-signer's file in the signer's state directory.
const StateFileName = "cosign.json"

// Errors the handlers map to status codes.
var (
	// ErrRefused: the checkpoint does not extend the last co-signed one
	// (or is not a checkpoint of the configured log). Nothing was signed.
	ErrRefused = errors.New("checkpoint refused")
	// ErrUnknownLog: a log this co-signer does not co-sign.
	ErrUnknownLog = errors.New("unknown log")
)

// Refusal reasons, the values of the reason label of
// custody_checkpoint_cosign_refused_total.
const (
	ReasonMalformed    = "malformed"    // not a checkpoint note, or a malformed proof
	ReasonOrigin       = "origin"       // another log's checkpoint
	ReasonStaleBase    = "stale_base"   // from_size is not the last co-signed size: the caller retries
	ReasonRollback     = "rollback"     // smaller than the last co-signed checkpoint
	ReasonFork         = "fork"         // same size as the last, another root hash
	ReasonInconsistent = "inconsistent" // the consistency proof does not verify
)

var reasons = []string{ReasonMalformed, ReasonOrigin, ReasonStaleBase, ReasonRollback, ReasonFork, ReasonInconsistent}

// keyTTL is how long the current version of the checkpoint key is cached; a
// rotation in the back end is picked up within it.
const keyTTL = 5 * time.Second

// Config configures New.
type Config struct {
	// Origin is the log whose checkpoints are co-signed, e.g.
	// "custody.dev/log".
	Origin string
	// Name is the cosigner's name, the key name of its cosignature/v1
	// signatures, e.g. "custody.dev/signer": a valid note name that differs
	// from Origin.
	Name string
	// Backend holds KeyName, an Ed25519 key.
	Backend keys.Backend
	KeyName string
	// StateDir holds the state file, StateFileName.
	StateDir string
	// Registerer receives custody_checkpoint_cosign_refused_total.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Cosigner co-signs checkpoints of one log. Its methods are safe for
// concurrent use; Cosign calls are serialized, so two requests from the same
// base cannot both succeed.
type Cosigner struct {
	origin  string
	name    string
	backend keys.Backend
	keyName string
	path    string
	logger  *slog.Logger
	now     func() time.Time
	refused *prometheus.CounterVec

	mu    sync.Mutex // serializes Cosign; guards state
	state *stateFile

	keyMu      sync.Mutex
	key        keys.Version
	keyFetched time.Time
}

// New loads the state from cfg.StateDir. A missing state file means no
// checkpoint was co-signed yet: the first one is trusted on first use. A
// state file that cannot be read or parsed is an error, with what to do
// about it: the co-signer never falls back to trusting anything.
func New(cfg Config) (*Cosigner, error) {
	if _, _, err := tlog.GenerateKey(cfg.Origin); err != nil {
		return nil, fmt.Errorf("log origin: %w", err)
	}
	if _, _, err := tlog.GenerateKey(cfg.Name); err != nil {
		return nil, fmt.Errorf("cosigner name: %w", err)
	}
	if cfg.Name == cfg.Origin {
		return nil, fmt.Errorf("cosigner name %q is the log's origin: a cosignature/v1 key must be named apart from the log (e.g. %s)", cfg.Name, "custody.dev/signer")
	}
	if !keys.ValidName(cfg.KeyName) {
		return nil, fmt.Errorf("checkpoint key name %q: want 1-64 of a-z, 0-9, '-', '_', starting with a letter", cfg.KeyName)
	}
	if cfg.StateDir == "" {
		return nil, errors.New("co-signing needs a state directory")
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	path := filepath.Join(cfg.StateDir, StateFileName)
	st, err := loadState(path)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "custody_checkpoint_cosign_refused_total",
		Help: "Checkpoints the signer refused to co-sign, by reason; anything but stale_base means the log may have forked or rolled back.",
	}, []string{"reason"})
	for _, r := range reasons {
		refused.WithLabelValues(r) // export zeros, so that increase() sees the first refusal
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(refused); err != nil {
			return nil, fmt.Errorf("register co-signing metrics: %w", err)
		}
	}
	c := &Cosigner{origin: cfg.Origin, name: cfg.Name, backend: cfg.Backend, keyName: cfg.KeyName, path: path, logger: logger, now: now, refused: refused, state: st}
	if ls := st.Logs[cfg.Origin]; ls != nil {
		logger.Info("co-signing resumes", slog.String("origin", cfg.Origin), slog.Uint64("size", ls.Size), slog.String("state", path))
	} else {
		logger.Warn("no checkpoint co-signed yet: the first one will be trusted on first use", slog.String("origin", cfg.Origin), slog.String("state", path))
	}
	return c, nil
}

// Origin returns the log this co-signer co-signs.
func (c *Cosigner) Origin() string { return c.origin }

// Name returns the cosigner's name, the key name of its cosignatures.
func (c *Cosigner) Name() string { return c.name }

// Cosign verifies that checkpoint, a signed note of the configured log,
// extends the last checkpoint co-signed: fromSize must be that checkpoint's
// size and proof an RFC 6962 consistency proof from it (a checkpoint of the
// same size must have the same root hash, and an empty proof). The first
// checkpoint is accepted without a proof (trust on first use). It then adds
// the signer's timestamped C2SP cosignature/v1, persists the checkpoint as
// the new last one, and returns the note with the signatures it had and the
// signer's.
//
// A refusal wraps ErrRefused, is logged and counted; one for a stale
// fromSize says the current size, so that the caller can retry. Back-end
// failures wrap keys.ErrUnavailable. Nothing is persisted on failure, and a
// note is returned only once persisted.
func (c *Cosigner) Cosign(ctx context.Context, checkpoint []byte, fromSize uint64, proof [][]byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := parseNote(checkpoint)
	if err != nil {
		return nil, c.refuse(ctx, ReasonMalformed, fmt.Errorf("not a checkpoint: %w", err))
	}
	if b.origin != c.origin {
		return nil, c.refuse(ctx, ReasonOrigin, fmt.Errorf("checkpoint of log %q: this signer co-signs %q only", quote.Prefix(b.origin), c.origin))
	}
	newer := &tlog.Checkpoint{Origin: b.origin, Size: b.size, Hash: b.hash}
	last := c.state.Logs[c.origin]
	var lastSize uint64
	if last != nil {
		lastSize = last.Size
	}
	if fromSize != lastSize {
		return nil, c.refuse(ctx, ReasonStaleBase, fmt.Errorf("from_size %d is not the last co-signed size %d of %s: prove consistency from size %d and retry", fromSize, lastSize, c.origin, lastSize))
	}
	if last != nil {
		older := &tlog.Checkpoint{Origin: c.origin, Size: last.Size, Hash: last.RootHash}
		if err := tlog.VerifyConsistency(older, newer, proof); err != nil {
			reason := ReasonInconsistent
			switch {
			case newer.Size < older.Size:
				reason = ReasonRollback
			case newer.Size == older.Size && !bytes.Equal(newer.Hash, older.Hash):
				reason = ReasonFork
			case errors.Is(err, tlog.ErrMalformedProof):
				reason = ReasonMalformed
			}
			return nil, c.refuse(ctx, reason, err)
		}
	} else if len(proof) != 0 {
		return nil, c.refuse(ctx, ReasonMalformed, fmt.Errorf("first checkpoint of %s: want an empty proof, got %d hashes", c.origin, len(proof)))
	}

	signer, err := c.signer(ctx)
	if err != nil {
		return nil, err
	}
	var signErr error
	n := b.note
	out, err := note.Sign(n, &noteSigner{name: signer.name, hash: signer.hash, sign: func(msg []byte) ([]byte, error) {
		sig, err := signer.sign(msg)
		signErr = err
		return sig, err
	}})
	if signErr != nil {
		return nil, c.backendErr(signErr)
	}
	if err != nil {
		return nil, fmt.Errorf("co-sign checkpoint of %s at size %d: %w", c.origin, newer.Size, err)
	}
	if _, err := tlog.OpenCosigned(out, c.origin, signer.verifier); err != nil {
		// The back end signed with another key than it lists.
		return nil, fmt.Errorf("co-signed checkpoint does not verify with the checkpoint key: %w", err)
	}

	next := &stateFile{Version: stateVersion, Logs: map[string]*logState{}}
	for o, ls := range c.state.Logs {
		next.Logs[o] = ls
	}
	next.Logs[c.origin] = &logState{Size: newer.Size, RootHash: newer.Hash, Checkpoint: out}
	if err := next.save(c.path); err != nil {
		return nil, err
	}
	c.state = next
	if last == nil {
		c.logger.WarnContext(ctx, "first checkpoint co-signed: trusted on first use", slog.String("origin", c.origin), slog.Uint64("size", newer.Size))
	} else if newer.Size != last.Size {
		c.logger.DebugContext(ctx, "checkpoint co-signed", slog.String("origin", c.origin), slog.Uint64("from_size", last.Size), slog.Uint64("size", newer.Size))
	}
	return out, nil
}

// Cosigned returns the last checkpoint co-signed for origin, nil if none
// yet. Another origin than the configured one fails with ErrUnknownLog.
func (c *Cosigner) Cosigned(origin string) ([]byte, error) {
	if origin != c.origin {
		return nil, fmt.Errorf("%w %q: this signer co-signs %q only", ErrUnknownLog, quote.Prefix(origin), c.origin)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ls := c.state.Logs[origin]; ls != nil {
		return bytes.Clone(ls.Checkpoint), nil
	}
	return nil, nil
}

// VerifierKey returns the C2SP cosignature/v1 verifier key of the
// co-signatures ("<name>+<hash>+<base64(0x04 || key)>"), made from the current version of the
// checkpoint key. Back-end failures wrap keys.ErrUnavailable.
func (c *Cosigner) VerifierKey(ctx context.Context) (string, error) {
	s, err := c.signer(ctx)
	if err != nil {
		return "", err
	}
	return s.verifier, nil
}

// signer returns a note signer for the current version of the checkpoint
// key, signing within ctx.
func (c *Cosigner) signer(ctx context.Context) (*noteSigner, error) {
	c.keyMu.Lock()
	v, fetched := c.key, c.keyFetched
	c.keyMu.Unlock()
	if fetched.IsZero() || c.now().Sub(fetched) >= keyTTL {
		vs, err := c.backend.Versions(ctx, c.keyName)
		if err != nil {
			return nil, c.backendErr(err)
		}
		if len(vs) == 0 {
			return nil, fmt.Errorf("%w: %s key %q has no versions", keys.ErrUnavailable, c.backend.Kind(), c.keyName)
		}
		v = vs[len(vs)-1]
		c.keyMu.Lock()
		c.key, c.keyFetched = v, c.now()
		c.keyMu.Unlock()
	}
	return newNoteSigner(ctx, c.backend, c.name, v, c.now)
}

func (c *Cosigner) backendErr(err error) error {
	if errors.Is(err, keys.ErrNotFound) {
		return fmt.Errorf("%w: %s checkpoint key %q is missing: create it (Ed25519) in the key back end", keys.ErrUnavailable, c.backend.Kind(), c.keyName)
	}
	return fmt.Errorf("%s checkpoint key %q: %w", c.backend.Kind(), c.keyName, err)
}

// refuse counts and logs a refusal and returns it wrapping ErrRefused. A
// stale base is the catalog catching up (e.g. after a restart) and is only
// a warning; every other refusal is an error an operator must look at.
func (c *Cosigner) refuse(ctx context.Context, reason string, err error) error {
	c.refused.WithLabelValues(reason).Inc()
	attrs := []any{slog.String("origin", c.origin), slog.String("reason", reason), slog.Any("error", err)}
	if reason == ReasonStaleBase {
		c.logger.WarnContext(ctx, "checkpoint refused: stale base", attrs...)
	} else {
		c.logger.ErrorContext(ctx, "checkpoint refused: not consistent with the last co-signed checkpoint; the log may have forked or rolled back", attrs...)
	}
	return fmt.Errorf("%w: %w", ErrRefused, err)
}
