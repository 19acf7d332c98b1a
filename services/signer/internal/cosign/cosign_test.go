package cosign_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"

	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/signer/internal/cosign"
	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/custody-dev/custody/services/signer/internal/keys/soft"
)

const origin = "custody.test/log"

const cosignerName = "custody.test/signer"

// testLog is an in-memory log whose checkpoints the catalog's key signs.
type testLog struct {
	t    testing.TB
	tree *testonly.Tree
	skey string
	vkey string
}

func newTestLog(t testing.TB) *testLog {
	t.Helper()
	skey, vkey, err := tlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	return &testLog{t: t, tree: testonly.New(rfc6962.DefaultHasher), skey: skey, vkey: vkey}
}

func (l *testLog) grow(n int) {
	for range n {
		l.tree.AppendData(fmt.Appendf(nil, "entry %d", l.tree.Size()))
	}
}

// checkpoint returns the catalog-signed checkpoint of the tree at size.
func (l *testLog) checkpoint(size uint64) []byte {
	l.t.Helper()
	return l.sign(tlog.Checkpoint{Origin: origin, Size: size, Hash: l.tree.HashAt(size)})
}

func (l *testLog) sign(cp tlog.Checkpoint) []byte {
	l.t.Helper()
	b, err := tlog.SignCheckpoint(cp, l.skey)
	if err != nil {
		l.t.Fatal(err)
	}
	return b
}

func (l *testLog) proof(from, to uint64) [][]byte {
	l.t.Helper()
	if from == 0 || from == to {
		return nil
	}
	p, err := l.tree.ConsistencyProof(from, to)
	if err != nil {
		l.t.Fatal(err)
	}
	return p
}

type fixture struct {
	dir     string
	backend keys.Backend
	reg     *prometheus.Registry
	c       *cosign.Cosigner
}

func newBackend(t testing.TB) keys.Backend {
	t.Helper()
	store, err := soft.Open(filepath.Join(t.TempDir(), "keystore.json"), []byte("0123456789abcdef-passphrase"), true, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(t.Context(), "log", keys.Ed25519); err != nil {
		t.Fatal(err)
	}
	return store
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), backend: newBackend(t)}
	f.reopen(t)
	return f
}

// reopen starts a new co-signer on the same state directory and back end,
// as a restarted signer does.
func (f *fixture) reopen(t *testing.T) {
	t.Helper()
	c, reg, err := f.open()
	if err != nil {
		t.Fatal(err)
	}
	f.c, f.reg = c, reg
}

func (f *fixture) open() (*cosign.Cosigner, *prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	c, err := cosign.New(cosign.Config{Origin: origin, Name: cosignerName, Backend: f.backend, KeyName: "log", StateDir: f.dir, Registerer: reg,
		Logger: slog.New(slog.DiscardHandler)})
	return c, reg, err
}

// refused returns custody_checkpoint_cosign_refused_total{reason} as
// exported.
func (f *fixture) refused(t *testing.T, reason string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "custody_checkpoint_cosign_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" && lp.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("custody_checkpoint_cosign_refused_total{reason=%q} is not exported", reason)
	return 0
}

// cosign co-signs the log at size from the co-signer's last size.
func (f *fixture) cosign(t *testing.T, l *testLog, from, size uint64) ([]byte, error) {
	t.Helper()
	return f.c.Cosign(t.Context(), l.checkpoint(size), from, l.proof(from, size))
}

func mustCosign(t *testing.T, f *fixture, l *testLog, from, size uint64) []byte {
	t.Helper()
	out, err := f.cosign(t, l, from, size)
	if err != nil {
		t.Fatalf("co-sign %d → %d: %v", from, size, err)
	}
	return out
}

func TestFirstCheckpointTrustedAndGrowthAccepted(t *testing.T) {
	f := newFixture(t)
	l := newTestLog(t)
	if got, err := f.c.Cosigned(origin); err != nil || got != nil {
		t.Fatalf("Cosigned before any = %q, %v; want nil", got, err)
	}
	l.grow(5)
	first := mustCosign(t, f, l, 0, 5)
	vkey, err := f.c.VerifierKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []uint64{5, 6, 17, 300} {
		l.grow(int(size - l.tree.Size()))
		last, _ := tlog.OpenCosigned(first, origin, vkey)
		out := mustCosign(t, f, l, last.Size, size)
		// Both the catalog's and the signer's signatures verify.
		for _, key := range []string{vkey, l.vkey} {
			cp, err := tlog.OpenCosigned(out, origin, key)
			if err != nil {
				t.Fatalf("size %d: checkpoint does not verify with %s: %v", size, key, err)
			}
			if cp.Size != size || string(cp.Hash) != string(l.tree.HashAt(size)) {
				t.Errorf("co-signed checkpoint = %+v, want size %d", cp, size)
			}
		}
		got, err := f.c.Cosigned(origin)
		if err != nil || string(got) != string(out) {
			t.Errorf("Cosigned = %q, %v; want the note just returned", got, err)
		}
		first = out
	}
	if _, err := f.c.Cosigned("other.test/log"); !errors.Is(err, cosign.ErrUnknownLog) {
		t.Errorf("Cosigned(other log): got %v, want ErrUnknownLog", err)
	}
}

func TestRefusals(t *testing.T) {
	l := newTestLog(t)
	l.grow(20)
	// Another tree that shares the first 10 entries and then differs.
	forked := newTestLog(t)
	forked.skey, forked.vkey = l.skey, l.vkey
	for i := range 20 {
		if i < 10 {
			forked.tree.AppendData(fmt.Appendf(nil, "entry %d", i))
		} else {
			forked.tree.AppendData(fmt.Appendf(nil, "evil %d", i))
		}
	}
	otherKey, _, err := tlog.GenerateKey("other.test/log")
	if err != nil {
		t.Fatal(err)
	}
	otherOrigin, err := tlog.SignCheckpoint(tlog.Checkpoint{Origin: "other.test/log", Size: 16, Hash: l.tree.HashAt(16)}, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	catalogSigner, err := note.NewSigner(l.skey)
	if err != nil {
		t.Fatal(err)
	}
	extended, err := note.Sign(&note.Note{Text: string(mustBody(t, l, 16)) + "extension\n"}, catalogSigner)
	if err != nil {
		t.Fatal(err)
	}
	badProof := l.proof(12, 16)
	badProof[0] = append([]byte(nil), badProof[0]...)
	badProof[0][0] ^= 1

	tests := []struct {
		name       string
		checkpoint []byte
		from       uint64
		proof      [][]byte
		reason     string
		want       string
	}{
		{"inconsistent proof", l.checkpoint(16), 12, badProof, cosign.ReasonInconsistent, "proof does not match"},
		{"proof from another tree", l.checkpoint(16), 12, forked.proof(12, 16), cosign.ReasonInconsistent, "proof does not match"},
		{"fork at the same size", forked.checkpoint(12), 12, nil, cosign.ReasonFork, "log forked"},
		{"fork after", forked.checkpoint(16), 12, forked.proof(12, 16), cosign.ReasonInconsistent, "proof does not match"},
		{"rollback", l.checkpoint(11), 12, nil, cosign.ReasonRollback, "rolled back"},
		{"wrong from size", l.checkpoint(16), 10, l.proof(10, 16), cosign.ReasonStaleBase, "last co-signed size 12"},
		{"from size zero", l.checkpoint(16), 0, nil, cosign.ReasonStaleBase, "prove consistency from size 12"},
		{"wrong origin", otherOrigin, 12, l.proof(12, 16), cosign.ReasonOrigin, `co-signs "custody.test/log" only`},
		{"not a note", []byte("custody.test/log\n16\n"), 12, nil, cosign.ReasonMalformed, "not a checkpoint"},
		{"extension lines", extended, 12, l.proof(12, 16), cosign.ReasonMalformed, "not canonical"},
		{"malformed proof", l.checkpoint(16), 12, [][]byte{{1, 2, 3}}, cosign.ReasonMalformed, "malformed proof"},
		{"same size with a proof", l.checkpoint(12), 12, l.proof(10, 12), cosign.ReasonMalformed, "empty proof"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			base := mustCosign(t, f, l, 0, 12)
			before := f.refused(t, tt.reason)
			out, err := f.c.Cosign(t.Context(), tt.checkpoint, tt.from, tt.proof)
			if !errors.Is(err, cosign.ErrRefused) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Cosign = %q, %v; want ErrRefused mentioning %q", out, err, tt.want)
			}
			if out != nil {
				t.Errorf("refused, yet returned %q", out)
			}
			if got := f.refused(t, tt.reason) - before; got != 1 {
				t.Errorf("refused{reason=%q} grew by %v, want 1", tt.reason, got)
			}
			// Nothing changed: the last co-signed checkpoint is still the
			// base, also after a restart, and growth from it works.
			f.reopen(t)
			if got, _ := f.c.Cosigned(origin); string(got) != string(base) {
				t.Errorf("after a refusal, Cosigned = %q, want the base %q", got, base)
			}
			mustCosign(t, f, l, 12, 20)
		})
	}
}

// mustBody is the checkpoint body of the tree at size.
func mustBody(t *testing.T, l *testLog, size uint64) []byte {
	t.Helper()
	b := l.checkpoint(size)
	return b[:bytes.Index(b, []byte("\n\n"))+1]
}

func TestFirstCheckpointWithProofRefused(t *testing.T) {
	f := newFixture(t)
	l := newTestLog(t)
	l.grow(8)
	if _, err := f.c.Cosign(t.Context(), l.checkpoint(8), 0, l.proof(4, 8)); !errors.Is(err, cosign.ErrRefused) {
		t.Errorf("first checkpoint with a proof: got %v, want ErrRefused", err)
	}
}

func TestRestartKeepsState(t *testing.T) {
	f := newFixture(t)
	l := newTestLog(t)
	l.grow(7)
	out := mustCosign(t, f, l, 0, 7)
	f.reopen(t)
	got, err := f.c.Cosigned(origin)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(out, got); diff != "" {
		t.Errorf("Cosigned after restart (-before +after):\n%s", diff)
	}
	// The restarted signer still refuses what does not extend size 7: a
	// lost state would accept this as a first checkpoint.
	if _, err := f.cosign(t, l, 0, 3); !errors.Is(err, cosign.ErrRefused) {
		t.Errorf("after restart, a rollback: got %v, want ErrRefused", err)
	}
	l.grow(3)
	mustCosign(t, f, l, 7, 10)
}

func TestCorruptStateRefused(t *testing.T) {
	l := newTestLog(t)
	l.grow(4)
	tests := []struct {
		name   string
		mangle func(b []byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"empty", func([]byte) []byte { return nil }},
		{"not JSON", func([]byte) []byte { return []byte("garbage") }},
		{"size changed", func(b []byte) []byte { return []byte(strings.Replace(string(b), `"size": 4`, `"size": 3`, 1)) }},
		{"unknown field", func(b []byte) []byte {
			return []byte(strings.Replace(string(b), `"version"`, `"extra": 1, "version"`, 1))
		}},
		{"other version", func(b []byte) []byte { return []byte(strings.Replace(string(b), `"version": 1`, `"version": 9`, 1)) }},
		// Accepted before the one strict decoder:
		{"trailing brace", func(b []byte) []byte { return append(b, '}') }},
		{"repeated key", func(b []byte) []byte {
			return []byte(strings.Replace(string(b), `"version": 1`, `"version": 9, "version": 1`, 1))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			mustCosign(t, f, l, 0, 4)
			path := filepath.Join(f.dir, cosign.StateFileName)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tt.mangle(b), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err = f.open()
			if err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), "restore the file from a backup") {
				t.Errorf("open with a corrupt state: got %v, want an error saying what to do", err)
			}
		})
	}
}

func TestConcurrentFromSameBaseOneWins(t *testing.T) {
	f := newFixture(t)
	l := newTestLog(t)
	l.grow(10)
	mustCosign(t, f, l, 0, 10)
	// Two catalogs (or a replayed request) race from size 10 to different
	// sizes: one wins, the other must prove from the winner's size.
	l.grow(10)
	const n = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins []uint64
	)
	for i := range n {
		size := uint64(11 + i)
		cp, proof := l.checkpoint(size), l.proof(10, size)
		wg.Go(func() {
			_, err := f.c.Cosign(t.Context(), cp, 10, proof)
			switch {
			case err == nil:
				mu.Lock()
				wins = append(wins, size)
				mu.Unlock()
			case !errors.Is(err, cosign.ErrRefused):
				t.Errorf("size %d: %v", size, err)
			}
		})
	}
	wg.Wait()
	if len(wins) != 1 {
		t.Fatalf("%d requests from the same base succeeded (%v), want exactly 1", len(wins), wins)
	}
	if got := f.refused(t, cosign.ReasonStaleBase); got != n-1 {
		t.Errorf("stale_base refusals = %v, want %d", got, n-1)
	}
	got, _ := f.c.Cosigned(origin)
	vkey, _ := f.c.VerifierKey(t.Context())
	if cp, err := tlog.OpenCosigned(got, origin, vkey); err != nil || cp.Size != wins[0] {
		t.Errorf("last co-signed = %+v, %v; want the winner's size %d", cp, err, wins[0])
	}
}

func TestNewValidatesConfig(t *testing.T) {
	b := newBackend(t)
	tests := []struct {
		name string
		cfg  cosign.Config
		want string
	}{
		{"bad origin", cosign.Config{Origin: "has space", Name: cosignerName, Backend: b, KeyName: "log", StateDir: t.TempDir()}, "origin"},
		{"bad key name", cosign.Config{Origin: origin, Name: cosignerName, Backend: b, KeyName: "Log!", StateDir: t.TempDir()}, "key name"},
		{"no state dir", cosign.Config{Origin: origin, Name: cosignerName, Backend: b, KeyName: "log"}, "state directory"},
		{"cosigner named like the log", cosign.Config{Origin: origin, Name: origin, Backend: b, KeyName: "log", StateDir: t.TempDir()}, "named apart"},
		{"bad cosigner name", cosign.Config{Origin: origin, Name: "a+b", Backend: b, KeyName: "log", StateDir: t.TempDir()}, "cosigner name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := cosign.New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestBackendKeyProblems(t *testing.T) {
	store, err := soft.Open(filepath.Join(t.TempDir(), "keystore.json"), []byte("0123456789abcdef-passphrase"), true, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(t.Context(), "ecdsa", keys.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	l := newTestLog(t)
	l.grow(2)
	for _, name := range []string{"missing", "ecdsa"} {
		c, err := cosign.New(cosign.Config{Origin: origin, Name: cosignerName, Backend: store, KeyName: name, StateDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Cosign(t.Context(), l.checkpoint(2), 0, nil); err == nil || errors.Is(err, cosign.ErrRefused) {
			t.Errorf("key %q: Cosign = %v, want a key error", name, err)
		}
		if got, _ := c.Cosigned(origin); got != nil {
			t.Errorf("key %q: a failed Cosign was persisted", name)
		}
	}
}

// TestCosignatureV1 checks that the co-signature is a C2SP cosignature/v1
// under the cosigner's name, not the log's, timestamped with the
// co-signer's clock, and that the standard verifier of
// transparency-dev/formats accepts it.
func TestCosignatureV1(t *testing.T) {
	backend := newBackend(t)
	at := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	c, err := cosign.New(cosign.Config{Origin: origin, Name: cosignerName, Backend: backend, KeyName: "log", StateDir: t.TempDir(),
		Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	l := newTestLog(t)
	l.grow(3)
	out, err := c.Cosign(t.Context(), l.checkpoint(3), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := c.VerifierKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(vkey, cosignerName+"+") {
		t.Errorf("verifier key %q is not named %s", vkey, cosignerName)
	}
	v, err := fnote.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(out, note.VerifierList(v))
	if err != nil {
		t.Fatalf("formats cosignature/v1 verifier: %v", err)
	}
	if len(n.Sigs) != 1 || n.Sigs[0].Name != cosignerName {
		t.Fatalf("verified signatures = %+v, want one by %s", n.Sigs, cosignerName)
	}
	ts, err := fnote.CoSigV1Timestamp(n.Sigs[0])
	if err != nil || !ts.Equal(at) {
		t.Errorf("cosignature timestamp = %s, %v; want %s", ts, err, at)
	}
	cp, err := tlog.OpenCosigned(out, origin, vkey)
	if err != nil || !cp.CosignedAt.Equal(at) {
		t.Errorf("OpenCosigned = %+v, %v; want CosignedAt %s", cp, err, at)
	}
}

// TestSameTreeCosignedAgain: the catalog's refresh of an idle log (decision
// 0114) sends the tree the signer co-signed last, from that size with an
// empty proof. The signer co-signs it again with a later timestamp and keeps
// it as the last one, also across a restart; a different root at that size
// is still a fork, and a proof with equal sizes is malformed.
func TestSameTreeCosignedAgain(t *testing.T) {
	l := newTestLog(t)
	l.grow(9)
	dir, backend := t.TempDir(), newBackend(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	open := func() *cosign.Cosigner {
		t.Helper()
		c, err := cosign.New(cosign.Config{Origin: origin, Name: cosignerName, Backend: backend, KeyName: "log", StateDir: dir,
			Registerer: prometheus.NewRegistry(), Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := open()
	vkey, err := c.VerifierKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cosignedAt := func(b []byte) time.Time {
		t.Helper()
		cp, err := tlog.OpenCosigned(b, origin, vkey)
		if err != nil {
			t.Fatal(err)
		}
		if cp.Size != 9 || !bytes.Equal(cp.Hash, l.tree.HashAt(9)) {
			t.Fatalf("co-signed %d %x, want the tree of size 9", cp.Size, cp.Hash)
		}
		return cp.CosignedAt
	}
	first, err := c.Cosign(t.Context(), l.checkpoint(9), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, restart := range []bool{false, true, false} {
		now = now.Add(30 * time.Second)
		if restart {
			c = open()
		}
		out, err := c.Cosign(t.Context(), l.checkpoint(9), 9, nil)
		if err != nil {
			t.Fatalf("refresh %d of the same tree: %v", i, err)
		}
		if got := cosignedAt(out); !got.Equal(now) {
			t.Errorf("refresh %d: cosignature at %s, want %s", i, got, now)
		}
		if strings.Count(string(out), "— "+cosignerName+" ") != 1 {
			t.Errorf("refresh %d: want exactly one cosignature of %s:\n%s", i, cosignerName, out)
		}
		if got, _ := c.Cosigned(origin); !bytes.Equal(got, out) {
			t.Errorf("refresh %d: Cosigned is not the refreshed note", i)
		}
	}
	if cosignedAt(first).Equal(now) {
		t.Fatal("the clock did not move")
	}

	// Another root at the same size: a fork, refused; nothing changes.
	forked := newTestLog(t)
	forked.skey = l.skey
	forked.grow(8)
	forked.tree.AppendData([]byte("evil"))
	last, _ := c.Cosigned(origin)
	if _, err := c.Cosign(t.Context(), forked.checkpoint(9), 9, nil); !errors.Is(err, cosign.ErrRefused) || !strings.Contains(err.Error(), "forked") {
		t.Errorf("another root at the same size: got %v, want a fork refused", err)
	}
	if _, err := c.Cosign(t.Context(), l.checkpoint(9), 9, [][]byte{l.tree.HashAt(3)}); !errors.Is(err, cosign.ErrRefused) {
		t.Errorf("same tree with a proof: got %v, want ErrRefused", err)
	}
	if got, _ := c.Cosigned(origin); !bytes.Equal(got, last) {
		t.Error("a refused request changed the last co-signed checkpoint")
	}
}
