package verify

import (
	"crypto"
	"crypto/sha256"
	"slices"
	"sync"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/tlog"
)

// Cache remembers, for artifact envelopes Check has seen, what its
// signature step derives from their bytes alone: the parsed envelope, the
// statement it signs, and which of its signatures verified under which
// public key. All three are pure functions of immutable input (the
// envelope's bytes, named by their SHA-256, and the public key), so an
// answer from the cache is the answer the computation would give; nothing
// that can change is cached: the key's presence in the trust root, its
// window, its revocations (the trust root's and Options.Revoked) and its
// channels are checked on every Check, as are the subject, the log entry,
// the checkpoint and the inclusion proof. Only successes are remembered: a
// malformed envelope or a signature that does not verify is computed
// again each time. It holds at most the number of envelopes given to
// NewCache, forgetting the oldest first. It is safe for concurrent use.
//
// It also remembers log checkpoints that opened (tlog.OpenCosigned), keyed
// by the SHA-256 of the signed note's bytes and the exact verifier key it
// opened under: the parsed checkpoint is a pure function of those two.
// The catalog serves each entry with the checkpoint stored when it was
// logged, so repeated admissions of an artifact, and the artifacts of one
// co-signing batch, present the same bytes. The key is still looked up in
// the trust root by the checkpoint's origin on every Check (a rotated or
// removed log key is a different or no key, so a miss or a refusal), and
// the inclusion proof is verified against the checkpoint every time. A
// checkpoint that does not open is not remembered. At most as many
// checkpoints as envelopes are held, the oldest forgotten first.
type Cache struct {
	mu    sync.Mutex
	bySum bounded[[sha256.Size]byte, *envelopeMemo]
	cps   bounded[checkpointKey, *tlog.Checkpoint]
}

// bounded is a map of at most max entries that forgets the oldest first.
// The Cache's mutex guards it.
type bounded[K comparable, V any] struct {
	max int
	m   map[K]V
	// ring holds the keys in insertion order; next is the oldest.
	ring []K
	next int
}

func newBounded[K comparable, V any](max int) bounded[K, V] {
	return bounded[K, V]{max: max, m: make(map[K]V, max)}
}

// add stores v under k unless k is present, forgetting the oldest entry
// when full.
func (b *bounded[K, V]) add(k K, v V) {
	if _, ok := b.m[k]; ok {
		return
	}
	if len(b.ring) < b.max {
		b.ring = append(b.ring, k)
	} else {
		delete(b.m, b.ring[b.next])
		b.ring[b.next] = k
		b.next = (b.next + 1) % b.max
	}
	b.m[k] = v
}

// checkpointKey names a checkpoint that opened: the SHA-256 of the signed
// note and the verifier key it opened under.
type checkpointKey struct {
	sum [sha256.Size]byte
	key string
}

// envelopeMemo is what is known of one envelope. env is never changed
// after it is stored; stmt and good are guarded by Cache.mu.
type envelopeMemo struct {
	env  *attest.Envelope
	stmt *attest.Artifact
	good []verifiedSig
}

// verifiedSig records that signature index of the envelope verified
// under pub with algorithm alg.
type verifiedSig struct {
	index int
	alg   string
	pub   crypto.PublicKey
}

// NewCache returns a Cache of at most size envelopes (at least 1).
func NewCache(size int) *Cache {
	size = max(size, 1)
	return &Cache{bySum: newBounded[[sha256.Size]byte, *envelopeMemo](size), cps: newBounded[checkpointKey, *tlog.Checkpoint](size)}
}

// openCheckpoint is tlog.OpenCosigned(signed, origin, verifierKey),
// answered from the cache when these bytes opened under this key before.
// The caller gets its own copy.
func (c *Cache) openCheckpoint(signed []byte, origin, verifierKey string) (*tlog.Checkpoint, error) {
	k := checkpointKey{sum: sha256.Sum256(signed), key: verifierKey}
	c.mu.Lock()
	cp, ok := c.cps.m[k]
	c.mu.Unlock()
	if ok {
		return copyCheckpoint(cp), nil
	}
	cp, err := tlog.OpenCosigned(signed, origin, verifierKey)
	if err != nil {
		return nil, err
	}
	stored := copyCheckpoint(cp)
	c.mu.Lock()
	c.cps.add(k, stored)
	c.mu.Unlock()
	return cp, nil
}

func copyCheckpoint(cp *tlog.Checkpoint) *tlog.Checkpoint {
	out := *cp
	out.Hash = slices.Clone(cp.Hash)
	return &out
}

// envelope returns the memo of the envelope with bytes b, parsing and
// storing it if it is new; an envelope that does not parse is not stored.
func (c *Cache) envelope(sum [sha256.Size]byte, b []byte) (*envelopeMemo, error) {
	c.mu.Lock()
	m, ok := c.bySum.m[sum]
	c.mu.Unlock()
	if ok {
		return m, nil
	}
	env, err := attest.ParseEnvelope(b)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.bySum.m[sum]; ok {
		return m, nil
	}
	m = &envelopeMemo{env: env}
	c.bySum.add(sum, m)
	return m, nil
}

type equaler interface {
	Equal(crypto.PublicKey) bool
}

// verified reports whether signature i of m is known to verify under k.
func (c *Cache) verified(m *envelopeMemo, i int, k attest.Key) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range m.good {
		if e, ok := v.pub.(equaler); ok && v.index == i && v.alg == k.Algorithm && e.Equal(k.Public) {
			return true
		}
	}
	return false
}

// markVerified records that signature i of m verified under k.
func (c *Cache) markVerified(m *envelopeMemo, i int, k attest.Key) {
	if _, ok := k.Public.(equaler); !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(m.good) < maxSignatures {
		m.good = append(m.good, verifiedSig{index: i, alg: k.Algorithm, pub: k.Public})
	}
}

// maxSignatures bounds the verified signatures remembered per envelope
// (attest accepts at most 16 signatures, each under one key).
const maxSignatures = 16

// statement returns m's statement if it was parsed before.
func (c *Cache) statement(m *envelopeMemo) *attest.Artifact {
	c.mu.Lock()
	defer c.mu.Unlock()
	return m.stmt
}

// setStatement stores m's parsed statement.
func (c *Cache) setStatement(m *envelopeMemo, s *attest.Artifact) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m.stmt = s
}
