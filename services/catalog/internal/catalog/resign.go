package catalog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/tlog"
)

// resignedDetails are the details of an artifact.resigned entry.
type resignedDetails struct {
	PreviousEnvelopeSHA256 string `json:"previous_envelope_sha256"`
	KeyID                  string `json:"key_id"`
	PreviousKeyID          string `json:"previous_key_id"`
}

// RecordSignature makes envelope the current envelope of name@version (a
// re-signature, e.g. after a key rotation): it appends an artifact.resigned
// entry, with actor as its actor, and returns the record, whose Current is
// the new envelope and that entry, once a signed checkpoint covers it.
//
// Only the emitter of artifact.resigned in tlog's event table (the signer,
// which calls it from its ResignArtifact) may: any other actor gets
// ErrPermissionDenied before anything is read, stored or logged.
//
// The envelope must have one signature, by a key id of the documented form,
// and carry exactly the payload of the current envelope: a re-signature
// never changes the statement (ErrInvalid otherwise, saying what differs).
// The catalog holds no public keys, so it does not verify the signature:
// the gatekeeper and the CLI verify envelopes against the trust root. It
// fails with ErrNotFound if name@version is not recorded.
//
// It is idempotent: if envelope is already the current envelope, it returns
// the record as it is and created=false. It is crash-safe like
// RecordArtifact: the signature is stored as pending, appended, then marked
// logged, which also makes it current in the same transaction, so a
// signature is current only once its entry is logged and a confirmed one is
// never lost. A call that failed may still take effect (at the next call
// for the artifact, or at Recover): retry it to learn the outcome. Every
// envelope an artifact had stays stored, in order.
func (c *Catalog) RecordSignature(ctx context.Context, actor, name, version string, envelope []byte) (rec *ArtifactRecord, created bool, err error) {
	if err := c.authorize(ctx, actor, tlog.TypeArtifactResigned); err != nil {
		return nil, false, err
	}
	if !ValidName(name) || !ValidVersion(version) {
		return nil, false, fmt.Errorf("%w: name %q and version %q: give the name and version of a recorded artifact", ErrInvalid, trunc(name), trunc(version))
	}
	env, err := parseEnvelope(envelope)
	if err != nil {
		return nil, false, err
	}
	unlock, err := c.lock(ctx, name+"@"+version)
	if err != nil {
		return nil, false, err
	}
	defer unlock()

	rec, err = c.store.Artifact(ctx, name, version)
	if errors.Is(err, ErrNotFound) {
		return nil, false, fmt.Errorf("%w: no artifact %s@%s: record it first", ErrNotFound, name, version)
	}
	if err != nil {
		return nil, false, unavailable("look up artifact", err)
	}
	if !rec.Entry.Logged() {
		return nil, false, fmt.Errorf("%w: artifact %s@%s is still being recorded; retry shortly", ErrNotFound, name, version)
	}
	if err := c.verifyCurrent(rec); err != nil {
		return nil, false, err
	}

	// An earlier call stored a signature and did not finish logging it (a
	// crash, or the log failed): its leaf may be in the log, so finish it
	// first; the history stays in log order.
	pending, err := c.store.PendingSignature(ctx, rec.ID)
	switch {
	case err == nil:
		c.logger.InfoContext(ctx, "finishing pending signature", slog.String("artifact", name+"@"+version), slog.Int64("id", pending.ID))
		if err := c.finish(ctx, Ref{KindSignature, pending.ID}, &pending.Entry); err != nil {
			return nil, false, err
		}
		rec.Resigned = pending
		if bytes.Equal(pending.Envelope, envelope) {
			return rec, true, nil
		}
	case errors.Is(err, ErrNotFound):
	default:
		return nil, false, unavailable("look up pending signature", err)
	}

	current, currentKeyID, _ := rec.Current()
	if bytes.Equal(current, envelope) {
		return rec, false, nil
	}
	if len(env.Signatures) != 1 {
		return nil, false, fmt.Errorf("%w: envelope has %d signatures, want one: the signature by the new key", ErrInvalid, len(env.Signatures))
	}
	keyID := env.Signatures[0].KeyID
	if !validKeyID(keyID) {
		return nil, false, fmt.Errorf("%w: envelope keyid %q: want the lowercase hex SHA-256 of the key's PKIX DER, as the signer sets it", ErrInvalid, trunc(keyID))
	}
	cur, err := attest.ParseEnvelope(current)
	if err != nil {
		return nil, false, fmt.Errorf("%w: artifact %s@%s (row %d): stored envelope: %v", ErrIntegrity, name, version, rec.ID, err)
	}
	if err := sameStatement(cur, env); err != nil {
		return nil, false, fmt.Errorf("%w: a re-signature must carry the current statement unchanged: %v", ErrInvalid, err)
	}

	now := c.now().UTC()
	prevSum, sum := sha256.Sum256(current), sha256.Sum256(envelope)
	details, err := json.Marshal(resignedDetails{PreviousEnvelopeSHA256: hex.EncodeToString(prevSum[:]), KeyID: keyID, PreviousKeyID: currentKeyID})
	if err != nil {
		return nil, false, fmt.Errorf("encode details: %w", err)
	}
	a := rec.Artifact
	leaf, err := tlog.Entry{
		Type:           tlog.TypeArtifactResigned,
		Time:           now,
		Actor:          actor,
		Subject:        tlog.Subject{Name: a.Name, Version: a.Version, Digest: a.Digest},
		EnvelopeSHA256: hex.EncodeToString(sum[:]),
		Details:        details,
	}.Marshal()
	if err != nil {
		return nil, false, fmt.Errorf("%w: log entry: %v", ErrInvalid, err)
	}
	from, err := c.log.Size(ctx)
	if err != nil {
		return nil, false, unavailable("read log size", err)
	}
	sig := &Signature{ArtifactID: rec.ID, Envelope: envelope, KeyID: keyID, Actor: actor, CreatedAt: now, Entry: Entry{Leaf: leaf, SearchFrom: from}}
	if sig.ID, err = c.store.InsertSignature(ctx, sig); err != nil {
		if errors.Is(err, ErrAlreadyExists) {
			// Only another process writing the same database gets here.
			return nil, false, fmt.Errorf("%w: %s@%s is being re-signed concurrently; retry", ErrUnavailable, name, version)
		}
		return nil, false, unavailable("store signature", err)
	}
	if err := c.append(ctx, Ref{KindSignature, sig.ID}, &sig.Entry); err != nil {
		return nil, false, err
	}
	rec.Resigned = sig
	return rec, true, nil
}

// sameStatement checks that next carries exactly cur's statement, and says
// what differs if not.
func sameStatement(cur, next *attest.Envelope) error {
	if next.PayloadType != cur.PayloadType {
		return fmt.Errorf("payloadType %q differs from %q", trunc(next.PayloadType), trunc(cur.PayloadType))
	}
	if bytes.Equal(next.Payload, cur.Payload) {
		return nil
	}
	// Name the difference in the artifact's terms where possible.
	var diffs []string
	if nst, err := attest.ParseStatement(next.Payload); err != nil {
		diffs = append(diffs, err.Error())
	} else if got, err := nst.Artifact(); err != nil {
		diffs = append(diffs, err.Error())
	} else if cst, err := attest.ParseStatement(cur.Payload); err == nil {
		if want, err := cst.Artifact(); err == nil {
			for _, f := range []struct{ what, got, want string }{
				{"name", got.Name, want.Name}, {"version", got.Version, want.Version}, {"digest", got.Digest, want.Digest},
				{"channel", got.Channel, want.Channel}, {"builder.id", got.BuilderID, want.BuilderID},
				{"source repo", got.SourceRepo, want.SourceRepo}, {"source commit", got.SourceCommit, want.SourceCommit},
				{"startedOn", got.StartedOn.String(), want.StartedOn.String()}, {"finishedOn", got.FinishedOn.String(), want.FinishedOn.String()},
			} {
				if f.got != f.want {
					diffs = append(diffs, fmt.Sprintf("statement %s %q differs from the current %q", f.what, trunc(f.got), trunc(f.want)))
				}
			}
		}
	}
	if len(diffs) == 0 {
		i := 0
		for i < len(next.Payload) && i < len(cur.Payload) && next.Payload[i] == cur.Payload[i] {
			i++
		}
		diffs = append(diffs, fmt.Sprintf("statement bytes differ from byte %d on (%d bytes, current %d): sign the current envelope's payload bytes as they are",
			i, len(next.Payload), len(cur.Payload)))
	}
	return errors.New(strings.Join(diffs, "; "))
}

// validKeyID reports whether id is a key id as Custody's signer sets it:
// 64 lowercase hex digits.
func validKeyID(id string) bool {
	return digest.ValidHex(id)
}
