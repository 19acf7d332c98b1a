package command

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	tests := []struct {
		in                    string
		name, version, digest string
		bad                   bool
	}{
		{in: "app@1.0.0", name: "app", version: "1.0.0"},
		{in: "team/app@1.0.0+build.1", name: "team/app", version: "1.0.0+build.1"},
		{in: "sha256:" + strings.Repeat("ab", 32), digest: "sha256:" + strings.Repeat("ab", 32)},
		{in: "sha256:abc", bad: true}, // refused here, not by the server after a round trip
		{in: "sha256:" + strings.Repeat("AB", 32), bad: true},
		{in: "app", bad: true},
		{in: "@1", bad: true},
		{in: "app@", bad: true},
	}
	for _, tt := range tests {
		n, v, d, err := parseRef(tt.in)
		if (err != nil) != tt.bad || n != tt.name || v != tt.version || d != tt.digest {
			t.Errorf("parseRef(%q) = %q %q %q %v", tt.in, n, v, d, err)
		}
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	var out, errOut bytes.Buffer
	getenv := func(string) string { return "" }
	if code := Execute(t.Context(), []string{"admit", "app@1"}, getenv, &out, &errOut); code != ExitError {
		t.Errorf("admit without --env: exit %d, want %d", code, ExitError)
	}
	errOut.Reset()
	if code := Execute(t.Context(), []string{"admit", "app@1", "--env", "prod"}, getenv, &out, &errOut); code != ExitError || !strings.Contains(errOut.String(), "--dev-dir") {
		t.Errorf("admit without a stack: exit %d, %q; want a hint about --dev-dir", code, errOut.String())
	}
}
