package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestKeyCompromiseDrill runs docs/runbooks/key-compromise.md on the dev
// stack: rotate, re-verify and re-sign, revoke. Artifacts signed only by the
// revoked version are denied; re-signed ones, and ones signed by the new
// version, are admitted.
func TestKeyCompromiseDrill(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	publish := func(name string) {
		t.Helper()
		s.mustCustody("publish", randomFile(t, work, name, 4<<10), "--name", name, "--version", "1", "--channel", "staging")
	}
	admit := func(name string) (string, int) {
		t.Helper()
		return s.custody("admit", name+"@1", "--env", "staging")
	}
	mustAdmit := func(name, when string) {
		t.Helper()
		if out, code := admit(name); code != 0 {
			t.Fatalf("%s: %s denied (exit %d):\n%s", when, name, code, out)
		}
	}

	publish("resigned")
	publish("left-behind")
	mustAdmit("resigned", "before the drill")
	mustAdmit("left-behind", "before the drill")
	v1 := keyID(t, s.mustCustody("keys", "list"), "artifact", "1")

	// 1. Rotate: version 2 signs from now on.
	out := s.mustCustody("keys", "rotate", "artifact")
	if !strings.Contains(out, "version 2") || !strings.Contains(out, "signs now") {
		t.Fatalf("rotate:\n%s", out)
	}
	publish("after-rotation")

	// 2. Re-verify and re-sign: a dry run first, then one artifact only, so
	// that another stays signed by version 1 alone.
	out = s.mustCustody("keys", "resign", "--revoked-version", "1", "--dry-run")
	if !strings.Contains(out, "VERIFIED resigned@1") || !strings.Contains(out, "VERIFIED left-behind@1") || strings.Contains(out, "after-rotation") {
		t.Fatalf("dry run lists the wrong artifacts:\n%s", out)
	}
	out = s.mustCustody("keys", "resign", "--revoked-version", "1", "--artifact", "resigned@1")
	if !strings.Contains(out, "RESIGNED resigned@1") || !strings.Contains(out, "1 artifacts re-signed, 0 failed") {
		t.Fatalf("resign:\n%s", out)
	}

	// 3. Revoke version 1, effective an hour ago: everything it signed is
	// suspect.
	out = s.mustCustody("keys", "revoke", "artifact", "--version", "1", "--effective", "1h", "--reason", "drill: key presumed compromised")
	if !strings.Contains(out, "revoked artifact version 1") {
		t.Fatalf("revoke:\n%s", out)
	}
	list := s.mustCustody("keys", "list")
	if !regexp.MustCompile(`artifact\s+1\s+revoked`).MatchString(list) || !regexp.MustCompile(`artifact\s+2\s+current`).MatchString(list) {
		t.Fatalf("keys list after the drill:\n%s", list)
	}

	// 4. The gatekeeper denies what only version 1 signed and admits the rest.
	out, code := admit("left-behind")
	if code != 1 || !strings.Contains(out, "DENY") || !strings.Contains(out, v1[:16]) && !strings.Contains(out, "revoked") {
		t.Fatalf("artifact signed only by the revoked version: exit %d\n%s", code, out)
	}
	mustAdmit("resigned", "after the drill")
	mustAdmit("after-rotation", "after the drill")

	// Fetch and verify offline the re-signed artifact against the pinned
	// trust root: the bundle carries the newer roots.
	dst := filepath.Join(work, "resigned.out")
	s.mustCustody("fetch", "resigned@1", "--env", "staging", "-o", dst, "--bundle", dst+".bundle")
	s.mustCustody("verify", dst, "--bundle", dst+".bundle")

	// Finishing the drill re-signs the rest, which is admitted again.
	out = s.mustCustody("keys", "resign", "--revoked-version", "1")
	if !strings.Contains(out, "RESIGNED left-behind@1") || !strings.Contains(out, "1 artifacts re-signed, 0 failed") {
		t.Fatalf("second resign:\n%s", out)
	}
	mustAdmit("left-behind", "after it was re-signed")
	if out := s.mustCustody("keys", "resign", "--revoked-version", "1"); !strings.Contains(out, "0 artifacts re-signed, 0 failed") {
		t.Fatalf("a third resign found work:\n%s", out)
	}
}

// keyID finds the (abbreviated) key id of a key version in `custody keys
// list` output.
func keyID(t *testing.T, list, name, version string) string {
	t.Helper()
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) >= 7 && f[0] == name && f[1] == version {
			return f[6]
		}
	}
	t.Fatalf("no %s version %s in:\n%s", name, version, list)
	return ""
}
