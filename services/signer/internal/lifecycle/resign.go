package lifecycle

import (
	"context"
	"errors"
	"fmt"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/services/signer/internal/keys"
)

// Resigned is the result of a re-signature.
type Resigned struct {
	Envelope []byte
	Key      keys.Version
	Previous keys.Version
	Artifact attest.Artifact
}

// Resign checks that envelope was made by one of the signer's own artifact
// key versions (revoked ones included: re-signing is how artifacts move off
// a revoked version) over a well-formed provenance statement, and signs the
// same statement with the current version of its channel's key. It never
// waits for approvals: the statement was approved when first signed.
func (m *Manager) Resign(ctx context.Context, envelope []byte) (Resigned, error) {
	env, err := attest.ParseEnvelope(envelope)
	if err != nil {
		return Resigned{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if env.PayloadType != attest.PayloadType {
		return Resigned{}, fmt.Errorf("%w: payload type %q, want %q", ErrInvalid, env.PayloadType, attest.PayloadType)
	}
	if len(env.Signatures) != 1 {
		return Resigned{}, fmt.Errorf("%w: %d signatures, want the one the signer made", ErrInvalid, len(env.Signatures))
	}
	id := env.Signatures[0].KeyID
	var prev *Info
	for _, name := range m.names() {
		if m.purpose(name) != attest.PurposeArtifact {
			continue
		}
		infos, err := m.versions(ctx, name)
		if err != nil {
			return Resigned{}, err
		}
		for i := range infos {
			if infos[i].ID == id {
				prev = &infos[i]
			}
		}
	}
	if prev == nil {
		return Resigned{}, fmt.Errorf("%w: envelope signed by key %s, which is not one of the signer's artifact key versions", ErrInvalid, id)
	}
	pub, alg, err := attest.ParsePublicKey(prev.PublicDER)
	if err != nil {
		return Resigned{}, fmt.Errorf("public key of %s version %d: %w", prev.Name, prev.Version.Version, err)
	}
	k := attest.Key{ID: prev.ID, Purpose: attest.PurposeArtifact, Algorithm: alg, Public: pub}
	if _, err := env.Verify([]attest.Key{k}, attest.PurposeArtifact); err != nil {
		return Resigned{}, fmt.Errorf("%w: the envelope does not verify with %s version %d: %v", ErrInvalid, prev.Name, prev.Version.Version, err)
	}
	st, err := attest.ParseStatement(env.Payload)
	if err != nil {
		return Resigned{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	a, err := st.Artifact()
	if err != nil {
		return Resigned{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	name := m.ArtifactKey(a.Channel)
	cur, err := m.Current(ctx, name)
	if err != nil {
		return Resigned{}, err
	}
	if cur.ID == prev.ID {
		return Resigned{}, fmt.Errorf("%w: %s@%s is already signed by the current version %d of key %q", ErrPrecondition, a.Name, a.Version, cur.Version, name)
	}
	var signErr error
	out, err := attest.SignEnvelope(attest.PayloadType, env.Payload, cur.ID, func(pae []byte) ([]byte, error) {
		sig, err := m.cfg.Backend.Sign(ctx, name, cur.Version, pae)
		signErr = err
		return sig, err
	})
	if signErr != nil {
		return Resigned{}, m.backendErr(name, signErr)
	}
	if err != nil {
		return Resigned{}, err
	}
	return Resigned{Envelope: out, Key: cur, Previous: prev.Version, Artifact: *a}, nil
}

// IsKeyError reports whether err came from this package's sentinels.
func IsKeyError(err error) bool {
	return errors.Is(err, ErrInvalid) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrPrecondition) || errors.Is(err, ErrUnavailable)
}
