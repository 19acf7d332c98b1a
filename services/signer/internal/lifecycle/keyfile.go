package lifecycle

import (
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/trustroot"
)

// ReadPublicKeyFile reads a PKIX PEM public key (an edge token key) for
// listing in trust roots.
func ReadPublicKeyFile(path string) (trustroot.Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return trustroot.Key{}, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return trustroot.Key{}, fmt.Errorf("%s: want a PEM \"PUBLIC KEY\" block", path)
	}
	pub, alg, err := attest.ParsePublicKey(blk.Bytes)
	if err != nil {
		return trustroot.Key{}, fmt.Errorf("%s: %w", path, err)
	}
	id, err := attest.KeyID(pub)
	if err != nil {
		return trustroot.Key{}, err
	}
	return trustroot.Key{ID: id, Algorithm: alg, PublicKey: blk.Bytes}, nil
}

// ParseEdgeTokenKey reads the value of --edge-token-public-key-file:
// FILE, optionally followed by ",valid-from=T" and ",valid-until=T" (RFC
// 3339), the window in which edges accept tokens signed by the key. A key
// being rotated out gets a valid-until at least the broker's token TTL
// after the broker switched to the new key (the transition window); the new
// key a valid-from at or before the switch. Errors name the flag value.
func ParseEdgeTokenKey(v string) (trustroot.EdgeTokenKey, error) {
	path, opts, _ := strings.Cut(v, ",")
	if path == "" {
		return trustroot.EdgeTokenKey{}, errors.New("want FILE[,valid-from=RFC3339][,valid-until=RFC3339]")
	}
	var k trustroot.EdgeTokenKey
	if opts != "" {
		for _, o := range strings.Split(opts, ",") {
			name, val, _ := strings.Cut(o, "=")
			t, err := time.Parse(time.RFC3339, val)
			if err != nil {
				return trustroot.EdgeTokenKey{}, fmt.Errorf("%q: %s: want an RFC 3339 time such as 2026-12-31T00:00:00Z", v, name)
			}
			t = t.UTC()
			switch {
			case name == "valid-from" && k.ValidFrom == nil:
				k.ValidFrom = &t
			case name == "valid-until" && k.ValidUntil == nil:
				k.ValidUntil = &t
			default:
				return trustroot.EdgeTokenKey{}, fmt.Errorf("%q: option %q: want valid-from= or valid-until=, each at most once", v, name)
			}
		}
	}
	if k.ValidFrom != nil && k.ValidUntil != nil && !k.ValidUntil.After(*k.ValidFrom) {
		return trustroot.EdgeTokenKey{}, fmt.Errorf("%q: valid-until is not after valid-from", v)
	}
	key, err := ReadPublicKeyFile(path)
	if err != nil {
		return trustroot.EdgeTokenKey{}, err
	}
	if key.Algorithm != attest.AlgEd25519 {
		return trustroot.EdgeTokenKey{}, fmt.Errorf("%s: a %s key; edge tokens are %s", path, key.Algorithm, attest.AlgEd25519)
	}
	k.Key = key
	return k, nil
}
