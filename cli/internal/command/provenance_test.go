package command

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProvenanceFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hexA := strings.Repeat("a", 64)
	good := write("good.json", `{"resolvedDependencies":[
		{"uri":"oci://registry.example/base","digest":{"sha256":"`+hexA+`"},"annotations":{"kind":"base-image"}},
		{"uri":"https://patches.example/fix.patch","digest":{"sha256":"`+strings.Repeat("b", 64)+`"},"annotations":{"kind":"patch"}}]}`)
	deps, err := provenanceFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(deps) != 2 || deps[0].GetUri() != "oci://registry.example/base" || deps[0].GetDigest()["sha256"] != hexA ||
		deps[0].GetAnnotations()["kind"] != "base-image" || deps[1].GetAnnotations()["kind"] != "patch" {
		t.Fatalf("parsed %v", deps)
	}
	for name, c := range map[string]struct{ path, want string }{
		"missing":       {filepath.Join(dir, "nope.json"), "no such file"},
		"not JSON":      {write("bad.json", `resolvedDependencies: []`), "want {"},
		"unknown field": {write("extra.json", `{"resolvedDependencies":[{"uri":"a","extra":1}]}`), "extra"},
		"oversized":     {write("big.json", `{"resolvedDependencies":[`+strings.Repeat(" ", 600<<10)+`]}`), "limit"},
	} {
		if _, err := provenanceFile(c.path); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "--provenance") {
			t.Errorf("%s: error %v, want one naming --provenance and %q", name, err, c.want)
		}
	}
}
