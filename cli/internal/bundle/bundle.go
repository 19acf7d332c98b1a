// Package bundle is the offline verification bundle: one JSON file with an
// artifact's envelope, log entry, inclusion proof and checkpoint, and the
// chain of signed trust roots it was verified under, checked by `custody
// verify` with no network against a pinned trust root.
package bundle

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/custody-dev/custody/libs/strictjson"
	"github.com/custody-dev/custody/libs/verify"
)

// MediaType identifies the bundle format. Version 1 carried bare public
// keys; version 2 carries signed trust roots instead.
const MediaType = "application/vnd.custody.bundle.v2+json"

// MaxSize bounds the bundles Parse reads.
const MaxSize = 4 << 20

// maxRoots bounds the trust-root chain a bundle carries.
const maxRoots = 256

// Bundle is the offline evidence for one artifact.
type Bundle struct {
	MediaType string `json:"mediaType"`
	verify.Evidence
	// TrustRoots are trust-root DSSE envelopes, oldest first and
	// consecutive, ending with the version the evidence was verified
	// against: what a verifier pinned at an older version needs to walk
	// forward. It may be empty if that version is the first.
	TrustRoots [][]byte `json:"trust_roots"`
	// TrustRootVersion is the version the writer verified against.
	TrustRootVersion int64 `json:"trust_root_version"`
}

// New returns a bundle for ev, verified under version of the trust root,
// with the chain of root envelopes leading to it.
func New(ev verify.Evidence, roots [][]byte, version int64) *Bundle {
	if roots == nil {
		roots = [][]byte{}
	}
	return &Bundle{MediaType: MediaType, Evidence: ev, TrustRoots: roots, TrustRootVersion: version}
}

// Marshal encodes the bundle.
func (b *Bundle) Marshal() ([]byte, error) {
	return json.MarshalIndent(b, "", "  ")
}

// Parse decodes a bundle, rejecting other media types, unknown fields,
// trailing data and anything over MaxSize. It does not verify the trust
// roots or the evidence.
func Parse(data []byte) (*Bundle, error) {
	var b Bundle
	if err := strictjson.Decode(data, MaxSize, &b); err != nil {
		return nil, fmt.Errorf("parse bundle: %w", err)
	}
	if b.MediaType != MediaType {
		return nil, fmt.Errorf("bundle media type %q, want %s: write it again with `custody bundle`", b.MediaType, MediaType)
	}
	if b.Artifact.Digest == "" || len(b.Envelope) == 0 || len(b.Entry.Leaf) == 0 || len(b.Entry.Checkpoint) == 0 {
		return nil, errors.New("bundle lacks the digest, envelope, log entry or checkpoint")
	}
	if b.TrustRootVersion < 1 {
		return nil, errors.New("bundle does not say which trust-root version it was verified against")
	}
	if len(b.TrustRoots) > maxRoots {
		return nil, fmt.Errorf("bundle carries %d trust roots, at most %d", len(b.TrustRoots), maxRoots)
	}
	return &b, nil
}
