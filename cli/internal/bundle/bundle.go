// Package bundle is the offline verification bundle: one JSON file with an
// artifact's envelope, log entry, inclusion proof, checkpoint and the public
// keys, verified by `custody verify` with no network.
package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/custody-dev/custody/cli/internal/evidence"
)

// MediaType identifies the bundle format.
const MediaType = "application/vnd.custody.bundle.v1+json"

// MaxSize bounds the bundles Parse reads.
const MaxSize = 4 << 20

// Bundle is the offline evidence for one artifact.
type Bundle struct {
	MediaType string `json:"mediaType"`
	evidence.Evidence
	Keys evidence.Keys `json:"keys"`
}

// New returns a bundle for ev verified with keys.
func New(ev evidence.Evidence, keys evidence.Keys) *Bundle {
	return &Bundle{MediaType: MediaType, Evidence: ev, Keys: keys}
}

// Marshal encodes the bundle.
func (b *Bundle) Marshal() ([]byte, error) {
	return json.MarshalIndent(b, "", "  ")
}

// Parse decodes a bundle, rejecting other media types, unknown fields,
// trailing data and anything over MaxSize.
func Parse(data []byte) (*Bundle, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("bundle is %d bytes, limit %d", len(data), MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var b Bundle
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("parse bundle: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse bundle: trailing data")
	}
	if b.MediaType != MediaType {
		return nil, fmt.Errorf("bundle media type %q, want %s", b.MediaType, MediaType)
	}
	if b.Artifact.Digest == "" || len(b.Envelope) == 0 || len(b.Entry.Leaf) == 0 || len(b.Entry.Checkpoint) == 0 {
		return nil, errors.New("bundle lacks the digest, envelope, log entry or checkpoint")
	}
	if len(b.Keys.Signer) == 0 || b.Keys.LogPublicKey == "" {
		return nil, errors.New("bundle lacks public keys")
	}
	return &b, nil
}
