package lifecycle

import (
	"context"
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/services/signer/internal/audit"
	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/custody-dev/custody/services/signer/internal/keys/soft"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type auditLog struct {
	mu     sync.Mutex
	events []audit.Event
	down   bool
}

func (a *auditLog) Log(_ context.Context, e audit.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down {
		return audit.ErrUnavailable
	}
	a.events = append(a.events, e)
	return nil
}

func (a *auditLog) types() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, e := range a.events {
		out = append(out, e.Type)
	}
	return out
}

type fixture struct {
	t     *testing.T
	store *soft.Store
	clock *clock
	audit *auditLog
	dir   string
	root  crypto.Signer
	m     *Manager
	dev   bool
	purge func(ctx context.Context, keyID string, effective time.Time, reference string) (int, error)
	// after and jitter, if set, are Run's purge backoff clock.
	after  func(time.Duration) <-chan time.Time
	jitter func() float64
}

func newFixture(t *testing.T, dev bool) *fixture {
	t.Helper()
	c := &clock{t: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	store, err := soft.Open(filepath.Join(t.TempDir(), "keystore.json"), []byte("0123456789abcdef-passphrase"), true, c.now)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"artifact", "artifact-prod", "decision"} {
		if _, err := store.Create(t.Context(), n, keys.ECDSAP256); err != nil {
			t.Fatal(err)
		}
	}
	root, err := trustroot.GenerateKey(attest.AlgEd25519)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, store: store, clock: c, audit: &auditLog{}, dir: t.TempDir(), root: root, dev: dev}
	f.reopen()
	return f
}

func (f *fixture) reopen() {
	f.t.Helper()
	cfg := Config{
		Backend: f.store, ArtifactKey: "artifact", ChannelKeys: map[string]string{"prod": "artifact-prod"}, DecisionKey: "decision",
		Dir: f.dir, Audit: f.audit, Now: f.clock.now, RootTTL: 30 * 24 * time.Hour, Purge: f.purge,
		After: f.after, Jitter: f.jitter,
	}
	if f.dev {
		cfg.DevRootKeys, cfg.DevThreshold = []crypto.Signer{f.root}, 1
	}
	m, err := Open(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.m = m
}

// publishFirst runs the ceremony for version 1 outside development.
func (f *fixture) publish() int64 {
	f.t.Helper()
	r, err := f.m.Draft(f.t.Context())
	if err != nil {
		f.t.Fatal(err)
	}
	if len(r.RootKeys) == 0 {
		k, err := trustroot.PublicKey(f.root)
		if err != nil {
			f.t.Fatal(err)
		}
		r.RootKeys, r.Threshold = []trustroot.Key{k}, 1
	}
	b, err := r.Marshal()
	if err != nil {
		f.t.Fatal(err)
	}
	env, err := trustroot.Sign(b, f.root)
	if err != nil {
		f.t.Fatal(err)
	}
	v, err := f.m.Publish(f.t.Context(), env, "spiffe://custody.test/admin/ops")
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

func (f *fixture) current(name string) int {
	f.t.Helper()
	f.clock.add(currentTTL)
	v, err := f.m.Current(f.t.Context(), name)
	if err != nil {
		f.t.Fatal(err)
	}
	return v.Version
}

func (f *fixture) info(name string, version int) Info {
	f.t.Helper()
	in, err := f.m.info(f.t.Context(), name, version)
	if err != nil {
		f.t.Fatal(err)
	}
	return in
}

func TestChannelKeys(t *testing.T) {
	f := newFixture(t, true)
	for ch, want := range map[string]string{"prod": "artifact-prod", "dev": "artifact", "staging": "artifact"} {
		if got := f.m.ArtifactKey(ch); got != want {
			t.Errorf("ArtifactKey(%q) = %q, want %q", ch, got, want)
		}
	}
	if _, err := f.m.EnsureRoot(t.Context()); err != nil {
		t.Fatal(err)
	}
	r, err := trustroot.Parse(f.m.Roots(0)[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range r.SigningKeys {
		want := []string(nil)
		if k.Name == "artifact-prod" {
			want = []string{"prod"}
		}
		if strings.Join(k.Channels, ",") != strings.Join(want, ",") {
			t.Errorf("root lists %s with channels %v, want %v", k.Name, k.Channels, want)
		}
	}
}

func TestDevRotatePublishesAndSignsAtOnce(t *testing.T) {
	f := newFixture(t, true)
	v, err := f.m.EnsureRoot(t.Context())
	if err != nil || v != 1 {
		t.Fatalf("EnsureRoot = %d, %v; want version 1", v, err)
	}
	if again, err := f.m.EnsureRoot(t.Context()); err != nil || again != 1 {
		t.Fatalf("EnsureRoot again = %d, %v; want no new version", again, err)
	}
	in, rv, err := f.m.Rotate(t.Context(), "artifact", "admin")
	if err != nil {
		t.Fatal(err)
	}
	if in.Version.Version != 2 || rv != 2 || in.Status != StatusCurrent {
		t.Fatalf("Rotate = version %d status %s, root %d; want version 2 current in root 2", in.Version.Version, in.Status, rv)
	}
	if got := f.current("artifact"); got != 2 {
		t.Errorf("current version %d, want 2", got)
	}
	old := f.info("artifact", 1)
	if old.Status != StatusRetired || old.ValidUntil == nil {
		t.Errorf("version 1: status %s, valid until %v; want retired with a window end", old.Status, old.ValidUntil)
	}
	if got := strings.Join(f.audit.types(), ","); got != "trustroot.published,key.rotated,trustroot.published" {
		t.Errorf("events %s", got)
	}
}

func TestRotateIsPendingUntilARootListsIt(t *testing.T) {
	f := newFixture(t, false)
	if _, err := f.m.Current(t.Context(), "artifact"); err != nil {
		t.Fatalf("before any root the newest version signs: %v", err)
	}
	if v := f.publish(); v != 1 {
		t.Fatalf("first root is version %d", v)
	}
	in, rv, err := f.m.Rotate(t.Context(), "artifact", "admin")
	if err != nil {
		t.Fatal(err)
	}
	if in.Status != StatusPending || rv != 0 {
		t.Fatalf("rotated version is %s with root %d, want pending and no root", in.Status, rv)
	}
	if got := f.current("artifact"); got != 1 {
		t.Fatalf("version %d signs before the root lists version 2", got)
	}
	if v := f.publish(); v != 2 {
		t.Fatalf("second root is version %d", v)
	}
	if got := f.current("artifact"); got != 2 {
		t.Fatalf("version %d signs after the root lists version 2", got)
	}
}

func TestRevoke(t *testing.T) {
	f := newFixture(t, true)
	if _, err := f.m.EnsureRoot(t.Context()); err != nil {
		t.Fatal(err)
	}
	now := f.clock.now()
	for _, tc := range []struct {
		name    string
		key     string
		version int
		at      time.Time
		reason  string
		want    error
	}{
		{"no reason", "artifact", 1, time.Time{}, "", ErrInvalid},
		{"future", "artifact", 1, now.Add(time.Hour), "leaked", ErrInvalid},
		{"unknown key", "nope", 1, time.Time{}, "leaked", ErrNotFound},
		{"unknown version", "artifact", 9, time.Time{}, "leaked", ErrNotFound},
	} {
		if _, _, err := f.m.Revoke(t.Context(), tc.key, tc.version, tc.at, tc.reason, "admin"); !errors.Is(err, tc.want) {
			t.Errorf("%s: Revoke = %v, want %v", tc.name, err, tc.want)
		}
	}
	earlier := now.Add(-time.Hour)
	in, _, err := f.m.Revoke(t.Context(), "artifact", 1, earlier, "key leaked", "admin")
	if err != nil {
		t.Fatal(err)
	}
	if in.Status != StatusRevoked || !in.RevokedAt.Equal(earlier) {
		t.Fatalf("revoked version: %s at %v", in.Status, in.RevokedAt)
	}
	// A later time does not move the revocation.
	if in, _, err = f.m.Revoke(t.Context(), "artifact", 1, now, "again", "admin"); err != nil || !in.RevokedAt.Equal(earlier) {
		t.Fatalf("second revocation: %v at %v, want %v", err, in.RevokedAt, earlier)
	}
	if _, err := f.m.Current(t.Context(), "artifact"); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("Current after revoking the only version = %v, want ErrPrecondition", err)
	}
	// The root published lists it revoked.
	r, err := trustroot.Parse(f.m.Roots(0)[0])
	if err != nil {
		t.Fatal(err)
	}
	sk, ok := r.SigningKey(in.ID)
	if !ok || sk.Status != trustroot.StatusRevoked || sk.RevokedAt == nil || !sk.RevokedAt.Equal(earlier) {
		t.Fatalf("root %d lists the revoked version as %+v", r.Version, sk)
	}
	// Survives a restart.
	f.reopen()
	if in := f.info("artifact", 1); in.Status != StatusRevoked {
		t.Fatalf("after restart version 1 is %s", in.Status)
	}
}

func TestPublishNeverUndoesARevocation(t *testing.T) {
	f := newFixture(t, false)
	f.publish()
	draft, err := f.m.Draft(t.Context()) // lists artifact v1 active
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.m.Revoke(t.Context(), "artifact", 1, time.Time{}, "leaked", "admin"); err != nil {
		t.Fatal(err)
	}
	b, _ := draft.Marshal()
	env, _ := trustroot.Sign(b, f.root)
	if _, err := f.m.Publish(t.Context(), env, "admin"); !errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("Publish of a stale draft = %v, want a refusal naming the revocation", err)
	}
}

func TestPublishRefusesRollbackAndForeignRoots(t *testing.T) {
	f := newFixture(t, false)
	f.publish()
	first := f.m.Roots(0)[0]
	if v, err := f.m.Publish(t.Context(), first, "admin"); err != nil || v != 1 || len(f.m.Roots(1)) != 0 {
		t.Fatalf("publishing version 1 again = %d, %v; want an idempotent no-op", v, err)
	}
	f.clock.add(time.Hour)
	draft, _ := f.m.Draft(t.Context())
	draft.Version = 1 // another version 1: a rollback
	b1, _ := draft.Marshal()
	env1, _ := trustroot.Sign(b1, f.root)
	if _, err := f.m.Publish(t.Context(), env1, "admin"); !errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "rollback") {
		t.Fatalf("publishing another version 1 = %v, want a rollback refusal", err)
	}
	other, _ := trustroot.GenerateKey(attest.AlgEd25519)
	draft, _ = f.m.Draft(t.Context())
	b, _ := draft.Marshal()
	env, _ := trustroot.Sign(b, f.root)
	// Signed by the root key, then tampered: does not verify.
	tampered := []byte(strings.Replace(string(env), `"payload":"`, `"payload":"A`, 1))
	if _, err := f.m.Publish(t.Context(), tampered, "admin"); err == nil {
		t.Fatal("a tampered root was published")
	}
	// Signed by a key that is not a root key.
	if _, err := trustroot.Sign(b, other); err == nil {
		t.Fatal("trustroot.Sign accepted a key that is not a root key of the draft")
	}
}

func TestResign(t *testing.T) {
	f := newFixture(t, true)
	if _, err := f.m.EnsureRoot(t.Context()); err != nil {
		t.Fatal(err)
	}
	stmt, err := attest.NewProvenance(attest.Artifact{Name: "app", Version: "1.0.0", Digest: "sha256:" + strings.Repeat("ab", 32),
		Channel: "prod", BuilderID: "spiffe://custody.test/builder/ci", StartedOn: f.clock.now(), FinishedOn: f.clock.now()})
	if err != nil {
		t.Fatal(err)
	}
	v1, _ := f.m.Current(t.Context(), "artifact-prod")
	env, err := attest.SignEnvelope(attest.PayloadType, stmt, v1.ID, func(pae []byte) ([]byte, error) {
		return f.store.Sign(t.Context(), "artifact-prod", v1.Version, pae)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Resign(t.Context(), env); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("Resign by the current version = %v, want ErrPrecondition", err)
	}
	if _, _, err := f.m.Rotate(t.Context(), "artifact-prod", "admin"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.m.Revoke(t.Context(), "artifact-prod", 1, time.Time{}, "leaked", "admin"); err != nil {
		t.Fatal(err)
	}
	f.clock.add(currentTTL)
	r, err := f.m.Resign(t.Context(), env)
	if err != nil {
		t.Fatal(err)
	}
	if r.Previous.ID != v1.ID || r.Key.Version != 2 || r.Key.Name != "artifact-prod" {
		t.Fatalf("re-signed by %s v%d from %s", r.Key.Name, r.Key.Version, r.Previous.ID)
	}
	out, err := attest.ParseEnvelope(r.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	if string(out.Payload) != string(stmt) {
		t.Fatal("the re-signed envelope carries another statement")
	}
	pub, alg, _ := attest.ParsePublicKey(r.Key.PublicDER)
	if _, err := out.Verify([]attest.Key{{ID: r.Key.ID, Purpose: attest.PurposeArtifact, Algorithm: alg, Public: pub}}, attest.PurposeArtifact); err != nil {
		t.Fatalf("re-signed envelope does not verify: %v", err)
	}

	// Tampered, foreign and decision envelopes are refused.
	bad := []byte(strings.Replace(string(env), `"sig":"`, `"sig":"AAAA`, 1))
	if _, err := f.m.Resign(t.Context(), bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("tampered: %v, want ErrInvalid", err)
	}
	dec, _ := f.m.Current(t.Context(), "decision")
	byDecision, _ := attest.SignEnvelope(attest.PayloadType, stmt, dec.ID, func(pae []byte) ([]byte, error) {
		return f.store.Sign(t.Context(), "decision", dec.Version, pae)
	})
	if _, err := f.m.Resign(t.Context(), byDecision); !errors.Is(err, ErrInvalid) {
		t.Errorf("signed by the decision key: %v, want ErrInvalid", err)
	}
}

func TestAuditDownFailsClosed(t *testing.T) {
	f := newFixture(t, true)
	if _, err := f.m.EnsureRoot(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.audit.down = true
	if _, _, err := f.m.Rotate(t.Context(), "artifact", "admin"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Rotate with the log down = %v, want ErrUnavailable", err)
	}
	// A revocation takes effect even when the log is down, and says so.
	_, _, err := f.m.Revoke(t.Context(), "artifact", 1, time.Time{}, "leaked", "admin")
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "in effect") {
		t.Fatalf("Revoke with the log down = %v", err)
	}
	if in := f.info("artifact", 1); in.Status != StatusRevoked {
		t.Fatalf("version 1 is %s after a revocation the log missed", in.Status)
	}
	if n := f.m.Unlogged(); n != 5 {
		t.Fatalf("%d events queued, want the first root (queued at start), the rotation, the revocation and the two roots that published them", n)
	}
	// Queued events survive a restart and are logged, in order, once the
	// log is back.
	f.reopen()
	f.audit.down = false
	f.m.flush(t.Context())
	if n := f.m.Unlogged(); n != 0 {
		t.Fatalf("%d events still queued", n)
	}
	if got := strings.Join(f.audit.types(), ","); !strings.HasSuffix(got, "key.rotated,trustroot.published,key.revoked,trustroot.published") {
		t.Fatalf("events %s, want the queued rotation and revocation last", got)
	}
}

func TestConcurrentFlushLogsEachEventOnce(t *testing.T) {
	f := newFixture(t, false)
	for i := range 20 {
		f.m.enqueue(t.Context(), "test.event", map[string]any{"n": i})
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { f.m.flush(t.Context()) })
	}
	wg.Wait()
	if got := len(f.audit.types()); got != 20 || f.m.Unlogged() != 0 {
		t.Fatalf("%d events logged, %d left; want each of 20 logged once", got, f.m.Unlogged())
	}
	for i, e := range f.audit.events {
		if n := e.Details.(map[string]any)["n"]; n != float64(i) {
			t.Fatalf("event %d carries n=%v: out of order", i, n)
		}
	}
}

func TestCorruptStateRefused(t *testing.T) {
	f := newFixture(t, true)
	if _, err := f.m.EnsureRoot(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "keys.json"), []byte(`{"format":1,"versions":{"x":{}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Config{Backend: f.store, ArtifactKey: "artifact", DecisionKey: "decision", Dir: f.dir})
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Open with a corrupt state = %v", err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "keys.json"), []byte(`{"format":1,"versions":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.files().rootPath(1), []byte(`{"payloadType":"x","payload":"","signatures":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{Backend: f.store, ArtifactKey: "artifact", DecisionKey: "decision", Dir: f.dir}); err == nil {
		t.Fatal("Open with a stored root that does not verify succeeded")
	}
}

func (f *fixture) files() files { return files{f.dir} }

func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"format":1,"versions":{}}`))
	f.Add([]byte(`{"format":1,"versions":{"` + strings.Repeat("a", 64) + `":{"name":"artifact","version":1,"first_seen":"2026-01-01T00:00:00Z","revoked_at":"2026-01-02T00:00:00Z","revoke_reason":"x"}}}`))
	f.Add([]byte(`{"format":2}`))
	f.Add([]byte(`{"format":1,"versions":{},"purges":[{"key_id":"` + strings.Repeat("a", 64) + `","effective":"2026-01-02T00:00:00Z","reference":"key-revoked-aaaaaaaaaaaaaaaa-1","queued":"2026-01-02T00:00:00Z"}]}`))
	f.Add([]byte(`{"format":1,"versions":{},"purges":[{"key_id":"a","reference":""}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseState(b)
		if err != nil {
			return
		}
		if len(s.Purges) > maxPurges {
			t.Fatalf("accepted %d pending purges", len(s.Purges))
		}
		for _, p := range s.Purges {
			if len(p.KeyID) != 64 || p.Reference == "" || p.Effective.IsZero() {
				t.Fatalf("accepted incomplete pending purge %+v", p)
			}
		}
		for id, v := range s.Versions {
			if v == nil || len(id) != 64 || v.Version < 1 {
				t.Fatalf("accepted incomplete entry %q", id)
			}
		}
	})
}

// TestRevokeNeverInTheFuture: an effective time within the minute of clock
// skew that Revoke accepts is stored as now (it used to be stored as given,
// up to 59 s ahead), and one beyond it is refused.
func TestRevokeNeverInTheFuture(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ahead  time.Duration
		wantAt time.Duration // after now
		want   error
	}{
		{"now", 0, 0, nil},
		{"one second ahead", time.Second, 0, nil},
		{"59 seconds ahead", 59 * time.Second, 0, nil},
		{"a minute ahead", time.Minute, 0, nil},
		{"just over a minute ahead", time.Minute + time.Second, 0, ErrInvalid},
		{"in the past", -time.Hour, -time.Hour, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, true)
			if _, err := f.m.EnsureRoot(t.Context()); err != nil {
				t.Fatal(err)
			}
			now := f.clock.now()
			in, _, err := f.m.Revoke(t.Context(), "artifact", 1, now.Add(tc.ahead), "leaked", "admin")
			if !errors.Is(err, tc.want) {
				t.Fatalf("Revoke = %v, want %v", err, tc.want)
			}
			if err != nil {
				return
			}
			if want := now.Add(tc.wantAt); !in.RevokedAt.Equal(want) {
				t.Errorf("revoked at %v, want %v", in.RevokedAt, want)
			}
			if in.RevokedAt.After(now) {
				t.Errorf("revocation time %v is after now %v", in.RevokedAt, now)
			}
		})
	}
}

// TestHostileKeyNames: a name no back end accepts is invalid input, not a
// missing key, and the error quotes only a prefix of it.
func TestHostileKeyNames(t *testing.T) {
	f := newFixture(t, true)
	for name, key := range map[string]string{
		"empty":      "",
		"upper case": "Artifact",
		"too long":   strings.Repeat("a", 1<<20),
		"slash":      "transit/keys",
	} {
		_, _, err := f.m.Rotate(t.Context(), key, "admin")
		if !errors.Is(err, ErrInvalid) || len(err.Error()) > 400 {
			t.Errorf("%s: Rotate = %.200v, want a short ErrInvalid", name, err)
		}
		_, _, err = f.m.Revoke(t.Context(), key, 1, time.Time{}, "leaked", "admin")
		if !errors.Is(err, ErrInvalid) || len(err.Error()) > 400 {
			t.Errorf("%s: Revoke = %.200v, want a short ErrInvalid", name, err)
		}
	}
	if _, _, err := f.m.Rotate(t.Context(), "nope", "admin"); !errors.Is(err, ErrNotFound) {
		t.Errorf("well-formed unknown key: %v, want ErrNotFound", err)
	}
}
