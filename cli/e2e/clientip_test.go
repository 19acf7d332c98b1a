package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFetchBoundToTheClientAddress: on the dev stack (real broker and both
// edges), URLs bound to the loopback range are served to this client; URLs
// bound to another range are refused by every edge, and no output is
// written; a too-wide range is refused by the broker.
func TestFetchBoundToTheClientAddress(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	src := randomFile(t, work, "bound.bin", 256<<10)
	s.mustCustody("publish", src, "--name", "bound", "--version", "1", "--channel", "staging")

	dst := filepath.Join(work, "inside")
	s.mustCustody("fetch", "bound@1", "--env", "staging", "-o", dst, "--client-ip", "127.0.0.0/8")
	sameFile(t, src, dst)

	out := filepath.Join(work, "outside")
	got, code := s.custody("fetch", "bound@1", "--env", "staging", "-o", out, "--client-ip", "203.0.113.0/24", "--retries", "1")
	if code == 0 || strings.Count(got, "another client address") < 2 {
		t.Fatalf("fetch bound to another range: exit %d, want a failure naming both edges' refusal:\n%s", code, got)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a refused fetch wrote its output")
	}

	got, code = s.custody("fetch", "bound@1", "--env", "staging", "-o", out, "--client-ip", "0.0.0.0/0")
	if code == 0 || !strings.Contains(got, "InvalidArgument") || !strings.Contains(got, "too wide") {
		t.Fatalf("fetch with a /0: exit %d, want InvalidArgument:\n%s", code, got)
	}
}
