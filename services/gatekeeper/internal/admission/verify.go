package admission

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/verify"
	"github.com/custody-dev/custody/services/gatekeeper/internal/policy"
)

// Labels of the shared failure metrics.
const (
	kindEnvelope   = "envelope"
	kindCheckpoint = "checkpoint"
	kindTrustRoot  = "trust_root"
	whereEvidence  = "evidence"
	whereLog       = "log"
	whereStore     = "store"
)

// verify checks an artifact's evidence with the one verifier (libs/verify)
// against the current trust root and the signer's live revocations, and
// that the publisher still holds the bytes. Every failed check is a message
// in the result; an error means a dependency failed and no decision can be
// made.
func (g *Gate) verify(ctx context.Context, req Request, ev *Evidence) (policy.Verification, []string, error) {
	a := ev.Artifact
	// The publisher may re-hash a large blob: start it first.
	blob := make(chan error, 1)
	go func() { blob <- g.cfg.Publisher.VerifyBlob(ctx, a.Digest) }()

	// Revocations and new roots take effect at once: ask the signer on
	// every admission (it must be up anyway to sign the decision). Keys
	// come only from roots that chain from the pinned one.
	if err := g.trust.sync(ctx); err != nil {
		<-blob
		return policy.Verification{}, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var ver policy.Verification
	// verify synced with the signer just before: a newer root, if any, is
	// in use already.
	root, err := g.trust.current()
	if err != nil {
		g.cfg.Metrics.SignatureFailures.WithLabelValues(kindTrustRoot).Inc()
		ver.Messages = append(ver.Messages, fmt.Sprintf("no usable trust root, so the gatekeeper denies every admission: %v", err))
		root = nil
	}
	want := verify.Want{Digest: req.Digest}
	if req.Digest == "" {
		want = verify.Want{Name: req.Name, Version: req.Version}
	}
	r := verify.Check(ev.Evidence, root, verify.Options{
		Want: want, Revoked: g.trust.revokedAt, RevokedBy: "the signer", AcceptBeforeRevocation: g.cfg.AcceptBeforeRevocation,
		Cache: g.verified,
	})
	for _, f := range r.Failures {
		g.countFailure(f)
		ver.Messages = append(ver.Messages, f.Reason)
	}
	ver.Signature = r.OK(verify.StepSignature)
	ver.SubjectMatch = r.OK(verify.StepRequest) && r.OK(verify.StepSubject)
	ver.Checkpoint = r.OK(verify.StepCheckpoint)
	ver.LogInclusion = r.OK(verify.StepInclusion) && r.OK(verify.StepEntry)
	passed := r.Confirmed
	if g.cfg.LogHead != nil {
		// The entry's checkpoint is as old as the artifact: freshness is
		// the head's, and the entry must be in the head's tree.
		denial, confirmed, err := g.cfg.LogHead.Check(ctx, r.Checkpoint)
		if err != nil {
			<-blob
			return policy.Verification{}, nil, fmt.Errorf("%w: log head: %w", ErrUnavailable, err)
		}
		if denial != "" {
			ver.Checkpoint = false
			ver.Messages = append(ver.Messages, denial)
		} else if confirmed != "" {
			passed = append(passed, confirmed)
		}
	}

	switch err := <-blob; {
	case err == nil:
		ver.BlobIntegrity = true
		passed = append(passed, fmt.Sprintf("publisher holds the bytes of %s intact", a.Digest))
	case errors.Is(err, ErrNotFound):
		g.cfg.Metrics.IntegrityFailures.WithLabelValues(whereStore).Inc()
		ver.Messages = append(ver.Messages, fmt.Sprintf("stored blob %s is missing from the publisher: the artifact cannot be served; restore it from backup", a.Digest))
	case errors.Is(err, ErrCorrupt):
		g.cfg.Metrics.IntegrityFailures.WithLabelValues(whereStore).Inc()
		ver.Messages = append(ver.Messages, fmt.Sprintf("stored blob %s no longer matches its digest (corrupted at rest): restore it from backup", a.Digest))
	default:
		return policy.Verification{}, nil, fmt.Errorf("%w: verify blob %s at the publisher: %w", ErrUnavailable, a.Digest, err)
	}
	return ver, passed, nil
}

// countFailure counts f in the signature or integrity failure metric.
func (g *Gate) countFailure(f verify.Failure) {
	sig, integrity := g.cfg.Metrics.SignatureFailures, g.cfg.Metrics.IntegrityFailures
	switch f.Step {
	case verify.StepSignature:
		sig.WithLabelValues(kindEnvelope).Inc()
	case verify.StepCheckpoint:
		// A checkpoint that is malformed is not a signature failure.
		if errors.Is(f, tlog.ErrUnknownKey) || errors.Is(f, tlog.ErrBadSignature) || errors.Is(f, tlog.ErrOriginMismatch) || errors.Is(f, verify.ErrNoLogKey) {
			sig.WithLabelValues(kindCheckpoint).Inc()
		}
	case verify.StepInclusion:
		integrity.WithLabelValues(whereLog).Inc()
	case verify.StepEntry:
		if errors.Is(f, tlog.ErrMalformedEntry) {
			integrity.WithLabelValues(whereLog).Inc()
		} else {
			integrity.WithLabelValues(whereEvidence).Inc()
		}
	default: // the request and the subject
		integrity.WithLabelValues(whereEvidence).Inc()
	}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
