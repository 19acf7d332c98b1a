package stop

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testDigest(i int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "artifact %d", i))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func writeRevocations(t *testing.T, file string, rs []Revocation) {
	t.Helper()
	b, err := json.Marshal(State{Pauses: map[string]Stop{}, Revoked: rs})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRevocationEpochsBound: the stop state lists the revocations younger
// than the retention, at most MaxListedRevocations (the newest); beyond
// that the overflow time is the newest left out, so that everything issued
// before it is refused; older ones are not listed but still deny.
func TestRevocationEpochsBound(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	var rs []Revocation
	// Two older than the retention, then one more than the list holds.
	start := now.Add(-DefaultRevocationRetention - time.Hour)
	for i := range MaxListedRevocations + 3 {
		at := start.Add(time.Duration(i) * time.Millisecond)
		if i >= 2 {
			at = now.Add(-time.Hour).Add(time.Duration(i) * time.Millisecond)
		}
		rs = append(rs, Revocation{Digest: testDigest(i), EpochTime: at, Reason: "r", By: "spiffe://custody.test/admin/a", LogIndex: int64(i)})
	}
	file := filepath.Join(t.TempDir(), "s.json")
	writeRevocations(t, file, rs)
	s, err := open(t, file, &memLog{})
	if err != nil {
		t.Fatal(err)
	}
	listed, overflow := s.RevocationEpochs(now)
	if len(listed) != MaxListedRevocations || listed[0].Digest != rs[3].Digest || listed[len(listed)-1].Digest != rs[len(rs)-1].Digest {
		t.Fatalf("listed %d, first %s: want the newest %d", len(listed), listed[0].Digest, MaxListedRevocations)
	}
	if !overflow.Equal(rs[2].EpochTime) {
		t.Fatalf("overflow %v, want the newest left out (%v)", overflow, rs[2].EpochTime)
	}
	// Within the list's bound: no overflow.
	if listed, overflow := s.RevocationEpochs(now.Add(DefaultRevocationRetention - time.Hour + 2*time.Millisecond + time.Microsecond)); !overflow.IsZero() || len(listed) != MaxListedRevocations {
		t.Fatalf("an hour later: %d listed, overflow %v", len(listed), overflow)
	}
	for _, i := range []int{0, 2, len(rs) - 1} {
		if d := s.Revoked(rs[i].Digest); !strings.Contains(d, fmt.Sprintf("log index %d", i)) {
			t.Errorf("revocation %d does not deny: %q", i, d)
		}
	}
	if d := s.Revoked(testDigest(-1)); d != "" {
		t.Errorf("an artifact never revoked is denied: %q", d)
	}
}

// TestRevocationStateCorrupt: a state file whose revocations are
// malformed, duplicated or out of order refuses to start, as any corrupt
// stop state does.
func TestRevocationStateCorrupt(t *testing.T) {
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	ok := Revocation{Digest: testDigest(1), EpochTime: at, Reason: "r", By: "b", LogIndex: 3}
	for name, rs := range map[string][]Revocation{
		"bad digest":   {{Digest: "sha256:nope", EpochTime: at, LogIndex: -1}},
		"no time":      {{Digest: testDigest(1), LogIndex: -1}},
		"bad index":    {{Digest: testDigest(1), EpochTime: at, LogIndex: -2}},
		"duplicate":    {ok, {Digest: testDigest(1), EpochTime: at.Add(time.Second), LogIndex: 4}},
		"out of order": {ok, {Digest: testDigest(2), EpochTime: at.Add(-time.Second), LogIndex: 4}},
	} {
		file := filepath.Join(t.TempDir(), "s.json")
		writeRevocations(t, file, rs)
		if _, err := open(t, file, &memLog{}); err == nil || !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("%s: Open = %v, want corrupt", name, err)
		}
	}
}

// TestRevokeLimit: past MaxRevocations a revocation is refused (ErrFull),
// never dropping an older one.
func TestRevokeLimit(t *testing.T) {
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	rs := make([]Revocation, MaxRevocations)
	for i := range rs {
		rs[i] = Revocation{Digest: testDigest(i), EpochTime: at.Add(time.Duration(i)), Reason: "r", By: "b", LogIndex: int64(i)}
	}
	file := filepath.Join(t.TempDir(), "s.json")
	writeRevocations(t, file, rs)
	s, err := open(t, file, &memLog{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(t.Context(), testDigest(-1), "r", "spiffe://custody.test/admin/a"); !errors.Is(err, ErrFull) {
		t.Fatalf("Revoke past the limit = %v, want ErrFull", err)
	}
	if res, err := s.Revoke(t.Context(), testDigest(7), "r", "spiffe://custody.test/admin/a"); err != nil || !res.Already {
		t.Fatalf("revoking a revoked one at the limit = %v %v, want Already", res, err)
	}
}
