package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custody-dev/custody/cli/internal/devstack"
)

// TestTrustRootCeremony runs the offline ceremony against the real signer:
// draft, one root signature (below the threshold: refused), the second,
// publish. Verifiers walk from their pin to the new version.
func TestTrustRootCeremony(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	l := devstack.Layout{Dir: s.dir}
	src := randomFile(t, work, "app", 4<<10)
	s.mustCustody("publish", src, "--name", "app", "--version", "1", "--channel", "staging")

	before := s.mustCustody("trustroot", "show")
	draft := filepath.Join(work, "draft.json")
	signed := filepath.Join(work, "signed.json")
	s.mustCustody("trustroot", "draft", "-o", draft)
	keys := l.RootKeys()
	s.mustCustody("trustroot", "sign", draft, "--key", keys[0], "-o", signed)
	if out, code := s.custody("trustroot", "publish", signed); code == 0 || !strings.Contains(out, "not signed by enough root keys") {
		t.Fatalf("a root with one of two signatures was published (exit %d):\n%s", code, out)
	}
	out := s.mustCustody("trustroot", "sign", signed, "--key", keys[1], "-o", signed)
	if !strings.Contains(out, "trust root v2") {
		t.Fatalf("sign printed no summary:\n%s", out)
	}
	s.mustCustody("trustroot", "publish", signed)
	if out, code := s.custody("trustroot", "publish", signed); code != 0 {
		t.Fatalf("publishing the same root again should be a no-op (exit %d):\n%s", code, out)
	}
	after := s.mustCustody("trustroot", "show")
	if after == before {
		t.Fatalf("the signer still serves the old root:\n%s", after)
	}

	// The gatekeeper and custody verify walk from their pin to it.
	if out := s.mustCustody("admit", "app@1", "--env", "staging"); !strings.Contains(out, "ALLOW") {
		t.Fatalf("admit after the ceremony:\n%s", out)
	}
	dst := filepath.Join(work, "app.out")
	s.mustCustody("fetch", "app@1", "--env", "staging", "-o", dst, "--bundle", dst+".bundle")
	s.mustCustody("verify", dst, "--bundle", dst+".bundle")

	// Another version 1, properly signed by both root keys: a rollback,
	// refused.
	s.mustCustody("trustroot", "draft", "-o", draft)
	var d map[string]any
	b, err := os.ReadFile(draft)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	d["version"] = 1
	b, _ = json.Marshal(d)
	if err := os.WriteFile(draft, b, 0o600); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(work, "old.json")
	s.mustCustody("trustroot", "sign", draft, "--key", keys[0], "-o", old)
	s.mustCustody("trustroot", "sign", old, "--key", keys[1], "-o", old)
	if out, code := s.custody("trustroot", "publish", old); code == 0 || !strings.Contains(out, "rollback") {
		t.Fatalf("another version 1 was published over version 2 (exit %d):\n%s", code, out)
	}
}
