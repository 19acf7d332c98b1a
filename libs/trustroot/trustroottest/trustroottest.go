// Package trustroottest makes real signed trust roots for tests: root keys
// generated in memory, signing keys, and envelopes signed by any subset of
// the root keys.
package trustroottest

import (
	"crypto"
	"crypto/x509"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/trustroot"
)

// Ceremony holds root keys and signs roots with them.
type Ceremony struct {
	// Signers are the root keys' private halves, Keys their public halves,
	// in the same order.
	Signers []crypto.Signer
	Keys    []trustroot.Key
}

// New returns a ceremony with n ECDSA P-256 root keys.
func New(t testing.TB, n int) *Ceremony {
	t.Helper()
	c := &Ceremony{}
	for range n {
		s, err := trustroot.GenerateKey(attest.AlgECDSAP256)
		if err != nil {
			t.Fatal(err)
		}
		k, err := trustroot.PublicKey(s)
		if err != nil {
			t.Fatal(err)
		}
		c.Signers, c.Keys = append(c.Signers, s), append(c.Keys, k)
	}
	return c
}

// Root returns version v listing the ceremony's root keys with threshold,
// expiring a year after now, with the given signing and log keys.
func (c *Ceremony) Root(v int64, threshold int, now time.Time, signing []trustroot.SigningKey, logs []trustroot.LogKey) *trustroot.Root {
	return &trustroot.Root{
		Type: trustroot.TypeV1, Version: v, Expires: now.Add(365 * 24 * time.Hour).UTC().Truncate(time.Second),
		Threshold: threshold, RootKeys: c.Keys, SigningKeys: signing, LogKeys: logs,
	}
}

// Sign returns r's envelope signed by the root keys at indexes (all of
// them if none are given), which r must list.
func (c *Ceremony) Sign(t testing.TB, r *trustroot.Root, indexes ...int) []byte {
	t.Helper()
	return c.SignAfter(t, r, nil, indexes...)
}

// SignAfter is Sign for a key rotation: the keys may also be root keys of
// previous, the version before r.
func (c *Ceremony) SignAfter(t testing.TB, r, previous *trustroot.Root, indexes ...int) []byte {
	t.Helper()
	if len(indexes) == 0 {
		for i := range c.Signers {
			indexes = append(indexes, i)
		}
	}
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range indexes {
		if b, err = trustroot.SignWith(b, c.Signers[i], previous); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// SigningKey describes pub as an active signing key version from
// validFrom.
func SigningKey(t testing.TB, pub crypto.PublicKey, purpose, name string, version int, validFrom time.Time) trustroot.SigningKey {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	_, alg, err := attest.ParsePublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	id, err := attest.KeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	return trustroot.SigningKey{
		Key:     trustroot.Key{ID: id, Algorithm: alg, PublicKey: der},
		Purpose: purpose, Name: name, Version: version, ValidFrom: validFrom.UTC(), Status: trustroot.StatusActive,
	}
}

// EdgeTokenKey describes pub as an edge token key accepted in the window
// [from, until); a nil bound is open.
func EdgeTokenKey(t testing.TB, pub crypto.PublicKey, from, until *time.Time) trustroot.EdgeTokenKey {
	t.Helper()
	k := SigningKey(t, pub, attest.PurposeArtifact, "edge-token", 1, time.Unix(0, 0)).Key
	return trustroot.EdgeTokenKey{Key: k, ValidFrom: from, ValidUntil: until}
}
