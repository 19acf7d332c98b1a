package admission

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
)

// rootSigner serves trust roots and revocations and counts TrustRoots
// calls.
type rootSigner struct {
	calls atomic.Int32
	// hold, if set, holds the first Revocations call after it read the
	// revocations, until released; entered is closed when it is held.
	hold, entered chan struct{}
	held          atomic.Bool

	mu      sync.Mutex
	roots   [][]byte // roots[i] is v(i+1) unless the test says otherwise
	revoked map[string]time.Time
	err     error
}

func (s *rootSigner) TrustRoots(ctx context.Context, after int64) ([][]byte, error) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	var out [][]byte
	for _, r := range s.roots {
		if v, err := trustroot.Parse(r); err == nil && v.Version > after {
			out = append(out, r)
		}
	}
	return out, nil
}

func (s *rootSigner) Revocations(context.Context) (map[string]time.Time, error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return nil, s.err
	}
	out := map[string]time.Time{}
	for id, at := range s.revoked {
		out[id] = at
	}
	s.mu.Unlock()
	if s.hold != nil && s.held.CompareAndSwap(false, true) {
		close(s.entered)
		<-s.hold
	}
	return out, nil
}

func (s *rootSigner) SignDecision(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("not used")
}

var trustNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// versions returns v1..vn signed by c.
func versions(t *testing.T, c *trustroottest.Ceremony, n int) ([][]byte, []*trustroot.Root) {
	var envs [][]byte
	var roots []*trustroot.Root
	for v := 1; v <= n; v++ {
		r := c.Root(int64(v), 1, trustNow, nil, nil)
		roots = append(roots, r)
		envs = append(envs, c.Sign(t, r))
	}
	return envs, roots
}

func newTestTrust(t *testing.T, s *rootSigner, pinned []byte, now *time.Time) *trust {
	t.Helper()
	pin, err := trustroot.Pin(pinned)
	if err != nil {
		t.Fatal(err)
	}
	return newTrust(s, pin, func() time.Time { return *now }, slog.New(slog.DiscardHandler))
}

func TestTrustRefreshWalksTheChain(t *testing.T) {
	c := trustroottest.New(t, 1)
	envs, _ := versions(t, c, 3)
	s := &rootSigner{roots: envs}
	now := trustNow
	tr := newTestTrust(t, s, envs[0], &now)
	if err := tr.refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if tr.root.Version() != 3 {
		t.Fatalf("at v%d after refresh, want v3", tr.root.Version())
	}
}

func TestTrustRefreshRefusesBadRoots(t *testing.T) {
	c := trustroottest.New(t, 1)
	envs, roots := versions(t, c, 3)
	rogue := trustroottest.New(t, 1)
	forged := roots[2]
	forged.RootKeys = rogue.Keys
	for _, tt := range []struct {
		name    string
		roots   [][]byte
		wantErr bool
	}{
		{"rollback: the signer offers older versions only", envs[:1], false},
		{"a v3 signed by other root keys", [][]byte{rogue.SignAfter(t, forged, nil)}, true},
		{"a skip to v4", [][]byte{c.Sign(t, c.Root(4, 1, trustNow, nil, nil))}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &rootSigner{roots: tt.roots}
			now := trustNow
			tr := newTestTrust(t, s, envs[1], &now)
			err := tr.refresh(t.Context())
			if tr.root.Version() != 2 {
				t.Fatalf("at v%d after refresh (%v), want v2 kept", tr.root.Version(), err)
			}
			if (err != nil) != tt.wantErr {
				t.Errorf("refresh = %v, want an error: %v", err, tt.wantErr)
			}
		})
	}
}

func TestTrustSignerDownKeepsRoot(t *testing.T) {
	c := trustroottest.New(t, 1)
	envs, roots := versions(t, c, 1)
	s := &rootSigner{err: errors.New("connection refused")}
	now := trustNow
	tr := newTestTrust(t, s, envs[0], &now)
	if err := tr.refresh(t.Context()); err == nil {
		t.Error("refresh with the signer down reported no error")
	}
	if _, err := tr.current(); err != nil {
		t.Errorf("current with the signer down: %v, want the pinned root", err)
	}
	now = roots[0].Expires
	if _, err := tr.current(); !errors.Is(err, trustroot.ErrExpired) {
		t.Errorf("current after expiry: %v, want ErrExpired", err)
	}
}

func TestTrustRevocationsOnlyNarrow(t *testing.T) {
	c := trustroottest.New(t, 1)
	envs, _ := versions(t, c, 1)
	early, late := trustNow.Add(-2*time.Hour), trustNow.Add(-time.Hour)
	s := &rootSigner{roots: envs, revoked: map[string]time.Time{"k1": late}}
	now := trustNow
	tr := newTestTrust(t, s, envs[0], &now)
	steps := []struct {
		revoked map[string]time.Time
		want    time.Time
	}{
		{map[string]time.Time{"k1": late}, late},
		{map[string]time.Time{"k1": early}, early},
		{map[string]time.Time{"k1": late}, early}, // a later time does not widen trust
		{map[string]time.Time{}, early},           // nor does forgetting
	}
	for i, st := range steps {
		s.mu.Lock()
		s.revoked = st.revoked
		s.mu.Unlock()
		if err := tr.refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		if at, ok := tr.revokedAt("k1"); !ok || !at.Equal(st.want) {
			t.Errorf("step %d: revoked at %v (%v), want %v", i, at, ok, st.want)
		}
	}
}

// TestSyncCoalescesButIsNeverStale: admissions syncing at once share round
// trips to the signer, but an admission never takes the answer of a round
// trip that started before it called: a revocation the signer recorded
// before the admission's sync is always seen.
func TestSyncCoalescesButIsNeverStale(t *testing.T) {
	c := trustroottest.New(t, 1)
	envs, _ := versions(t, c, 1)
	s := &rootSigner{roots: envs, revoked: map[string]time.Time{}, hold: make(chan struct{}), entered: make(chan struct{})}
	now := trustNow
	tr := newTestTrust(t, s, envs[0], &now)

	first := make(chan error, 1)
	go func() { first <- tr.sync(t.Context()) }()
	<-s.entered // the first round trip read no revocation and is held

	s.mu.Lock()
	s.revoked["k1"] = trustNow.Add(-time.Minute)
	s.mu.Unlock()
	var wg sync.WaitGroup
	later := make([]error, 8)
	for i := range later {
		wg.Go(func() { later[i] = tr.sync(t.Context()) })
	}
	// Let the eight queue behind the held round trip, then release it.
	for tr.syncs.Waiting() < len(later) {
		time.Sleep(time.Millisecond)
	}
	close(s.hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range later {
		if err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
	}
	if _, ok := tr.revokedAt("k1"); !ok {
		t.Error("a sync that began after the revocation was recorded did not see it")
	}
	if n := s.calls.Load(); n != 2 {
		t.Errorf("%d round trips for 9 syncs, want 2: the held one and one for the eight that waited", n)
	}
}
