package translog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/custody-dev/custody/libs/tlog"
)

// Cosigner adds its signature to the log's checkpoints after checking that
// each extends the last one it signed. The signer is the production one
// (SignerClient); verifiers trust its key, not the catalog's.
type Cosigner interface {
	// Cosigned returns the last checkpoint co-signed for origin, nil if
	// none yet.
	Cosigned(ctx context.Context, origin string) ([]byte, error)
	// Cosign returns checkpoint with the co-signature added. fromSize is
	// the size of the last checkpoint co-signed and proof a consistency
	// proof from it to checkpoint. A refusal wraps ErrRefused; other errors
	// mean the co-signer could not be asked.
	Cosign(ctx context.Context, checkpoint []byte, fromSize uint64, proof [][]byte) ([]byte, error)
}

var (
	// ErrRefused means the co-signer refused a checkpoint: it does not
	// extend the last one co-signed (as the co-signer knows it).
	ErrRefused = errors.New("co-signer refused the checkpoint")
	// ErrNotCosigned means no co-signed checkpoint covers an entry within
	// the bounded wait: the co-signer is unreachable or refuses. It comes
	// wrapped with ErrUnavailable; the caller may retry.
	ErrNotCosigned = errors.New("checkpoint not co-signed")
)

// cosignState is what the checkpoint loop shares with waiters. Guarded by
// Log.mu.
type cosignState struct {
	// signed and cp are the latest served checkpoint: with a Cosigner the
	// latest co-signed one, else the latest published; nil until one is
	// known.
	signed []byte
	cp     *tlog.Checkpoint
	// err is why the latest published checkpoint is not served; nil while
	// the loop keeps up.
	err error
	// changed is closed and replaced whenever signed or err changes.
	changed chan struct{}
}

// need records that an entry waits for a served checkpoint of at least size
// entries, and wakes the checkpoint loop if it sleeps.
func (l *Log) need(size uint64) {
	l.mu.Lock()
	grew := size > l.want
	if grew {
		l.want = size
	}
	l.mu.Unlock()
	if grew {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// satisfied reports whether a served checkpoint covers every entry waited
// for.
func (l *Log) satisfied() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cs.cp != nil && l.cs.cp.Size >= l.want
}

// checkpointLoop serves each newly published checkpoint (with a Cosigner,
// once co-signed) until the log closes. It polls every PollInterval only
// while some entry waits for a checkpoint that covers it, and sleeps
// otherwise; with a Cosigner it wakes every cosignRefresh to have the
// served tree co-signed again, so that an idle log's checkpoint stays fresh
// (one round trip per refresh, nothing in between). Two checkpoints start
// at least ServeGap apart, so a busy log signs a bounded number per
// second. After a failure it retries with a growing delay (up to
// cosignRetryMax), so serving resumes by itself when the co-signer is
// back.
func (l *Log) checkpointLoop(ctx context.Context) {
	defer close(l.loopDone)
	var (
		base     *tlog.Checkpoint // the co-signer's last checkpoint; nil: ask it
		delay    = l.poll
		failures int
		last     time.Time // when serveLatest last started
		cosigned time.Time // when a co-signature was last obtained; zero: none yet
	)
	refreshing := l.cosigner != nil && l.cosignRefresh > 0
	refresh := time.NewTimer(time.Hour)
	refresh.Stop()
	defer refresh.Stop()
	for {
		if failures == 0 && l.satisfied() {
			var due <-chan time.Time
			if refreshing {
				refresh.Reset(l.cosignRefresh - time.Since(cosigned))
				due = refresh.C
			}
			select {
			case <-l.closing:
				return
			case <-ctx.Done():
				return
			case <-l.wake:
			case <-due:
			}
			refresh.Stop()
		}
		// Pace the signing: entries that arrive meanwhile share the next
		// checkpoint.
		if wait := l.serveGap - time.Since(last); wait > 0 {
			select {
			case <-l.closing:
				return
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		last = time.Now()
		again := refreshing && last.Sub(cosigned) >= l.cosignRefresh
		signedNow, err := l.serveLatest(ctx, &base, again)
		l.setCosignErr(err)
		if signedNow {
			cosigned = last
		}
		switch {
		case err == nil:
			if failures > 0 {
				l.logger.InfoContext(ctx, "checkpoint co-signing resumed", slog.Int("failed_attempts", failures))
			}
			failures, delay = 0, l.poll
		default:
			if failures == 0 {
				delay = l.poll
				level := slog.LevelWarn
				if errors.Is(err, ErrIntegrity) || errors.Is(err, ErrRefused) {
					level = slog.LevelError
				}
				l.logger.Log(ctx, level, "checkpoint not co-signed; entries wait and then fail until it is", slog.Any("error", err))
			} else {
				delay = min(2*delay, l.cosignRetryMax)
				l.logger.DebugContext(ctx, "checkpoint co-signing failed again", slog.Int("failed_attempts", failures+1), slog.Any("error", err))
			}
			failures++
		}
		if err == nil && l.satisfied() {
			continue
		}
		select {
		case <-l.closing:
			return
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// serveLatest makes a checkpoint of the integrated tree the served one: with
// a Cosigner once co-signed, else as it is. With again, a tree already
// co-signed is co-signed once more (a refresh of its timestamp). It reports
// whether the co-signer signed.
func (l *Log) serveLatest(ctx context.Context, base **tlog.Checkpoint, again bool) (bool, error) {
	if l.cosigner != nil {
		return l.cosignLatest(ctx, base, again)
	}
	signed, cp, err := l.integrated(ctx)
	if err != nil {
		return false, err
	}
	if cur := l.latestCosigned(); cur == nil || cp.Size > cur.Size {
		l.setCosigned(signed, cp)
	}
	return false, nil
}

// cosignLatest has a checkpoint of the integrated tree co-signed, unless
// one of that tree already is and again is false. *base is the co-signer's
// last checkpoint as last learnt; it is asked again when unknown and after
// a refusal. It reports whether the co-signer signed.
func (l *Log) cosignLatest(ctx context.Context, base **tlog.Checkpoint, again bool) (bool, error) {
	signed, cp, err := l.integrated(ctx)
	if err != nil {
		return false, err
	}
	cur := l.latestCosigned()
	if cur != nil && sameTree(cur, cp) {
		if !again {
			return false, nil
		}
		// integrated returned the served note, which carries the last
		// cosignature: send the log's signature alone, as for a new tree
		// (Ed25519 signs deterministically: the same note).
		if signed, err = tlog.SignCheckpointWith(tlog.Checkpoint{Origin: cp.Origin, Size: cp.Size, Hash: cp.Hash}, l.signer); err != nil {
			return false, fmt.Errorf("%w: %v", ErrIntegrity, err)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, l.cosignTimeout)
	defer cancel()
	if *base == nil {
		b, err := l.cosigner.Cosigned(rctx, l.origin)
		if err != nil {
			return false, err
		}
		if len(b) == 0 {
			*base = &tlog.Checkpoint{Origin: l.origin}
		} else {
			// The co-signer signed the catalog's note: it carries the
			// log's own signature.
			bcp, err := tlog.OpenCheckpoint(b, l.verifier)
			if err != nil {
				return false, fmt.Errorf("%w: the co-signer's last checkpoint: %v", ErrIntegrity, err)
			}
			*base = bcp
			if _, err := l.proofFrom(ctx, bcp, cp); err != nil {
				return false, err
			}
			// It is in this log's tree: serve it until a newer one is
			// co-signed.
			l.setCosigned(b, bcp)
			if sameTree(bcp, cp) && !again {
				return false, nil
			}
		}
	}
	from := *base
	proof, err := l.proofFrom(ctx, from, cp)
	if err != nil {
		return false, err
	}
	out, err := l.cosigner.Cosign(rctx, signed, from.Size, proof)
	if err != nil {
		if errors.Is(err, ErrRefused) {
			*base = nil
		}
		return false, err
	}
	ocp, err := tlog.OpenCheckpoint(out, l.verifier)
	if err != nil || !sameTree(ocp, cp) {
		return false, fmt.Errorf("%w: the co-signer returned another checkpoint than the one sent (size %d): %v", ErrIntegrity, cp.Size, err)
	}
	*base = ocp
	l.setCosigned(out, ocp)
	return true, nil
}

// proofFrom returns the consistency proof from the co-signer's last
// checkpoint to cp, checked here first: a log that does not extend what was
// co-signed is an integrity failure of this log, not something to send.
func (l *Log) proofFrom(ctx context.Context, from, cp *tlog.Checkpoint) ([][]byte, error) {
	switch {
	case from.Size > cp.Size:
		return nil, fmt.Errorf("%w: the log has %d entries, but the co-signer co-signed %d: the log's data directory lost entries; restore it", ErrIntegrity, cp.Size, from.Size)
	case from.Size == 0:
		return nil, nil
	case from.Size == cp.Size && !bytes.Equal(from.Hash, cp.Hash):
		return nil, fmt.Errorf("%w: the log at size %d differs from the checkpoint co-signed at that size", ErrIntegrity, cp.Size)
	case from.Size == cp.Size:
		return nil, nil
	}
	proof, err := l.ConsistencyProof(ctx, from.Size, cp.Size)
	if err != nil {
		return nil, err
	}
	if err := tlog.VerifyConsistency(from, cp, proof); err != nil {
		return nil, fmt.Errorf("%w: the log does not extend the checkpoint co-signed at size %d: %v", ErrIntegrity, from.Size, err)
	}
	return proof, nil
}

func sameTree(a, b *tlog.Checkpoint) bool { return a.Size == b.Size && bytes.Equal(a.Hash, b.Hash) }

func (l *Log) latestCosigned() *tlog.Checkpoint {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cs.cp
}

// setCosigned records a co-signed checkpoint unless a larger one is known.
func (l *Log) setCosigned(signed []byte, cp *tlog.Checkpoint) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cs.cp != nil && l.cs.cp.Size > cp.Size {
		return
	}
	l.cs.signed, l.cs.cp = signed, cp
	l.cs.err = nil
	close(l.cs.changed)
	l.cs.changed = make(chan struct{})
}

func (l *Log) setCosignErr(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil && l.cs.err == nil {
		return
	}
	l.cs.err = err
	close(l.cs.changed)
	l.cs.changed = make(chan struct{})
}

// awaitServed waits, at most cosignWait, for a served checkpoint of at
// least size entries and returns the latest one.
func (l *Log) awaitServed(ctx context.Context, size uint64) ([]byte, *tlog.Checkpoint, error) {
	l.need(size)
	timer := time.NewTimer(l.cosignWait)
	defer timer.Stop()
	for {
		l.mu.Lock()
		signed, cp, lastErr, changed := l.cs.signed, l.cs.cp, l.cs.err, l.cs.changed
		l.mu.Unlock()
		if cp != nil && cp.Size >= size {
			return signed, cp, nil
		}
		why := "co-signing is slow"
		if lastErr != nil {
			why = lastErr.Error()
		}
		select {
		case <-changed:
		case <-timer.C:
			return nil, nil, fmt.Errorf("%w: %w: no checkpoint of %d or more entries co-signed within %s: %s", ErrUnavailable, ErrNotCosigned, size, l.cosignWait, why)
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("%w: %w: no checkpoint of %d or more entries co-signed: %v (%s)", ErrUnavailable, ErrNotCosigned, size, ctx.Err(), why)
		case <-l.closing:
			return nil, nil, fmt.Errorf("%w: shutting down", ErrUnavailable)
		}
	}
}
