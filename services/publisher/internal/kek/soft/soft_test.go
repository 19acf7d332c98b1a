package soft_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/custody-dev/custody/services/publisher/internal/kek/kektest"
	"github.com/custody-dev/custody/services/publisher/internal/kek/soft"
)

func TestConformance(t *testing.T) {
	kektest.Run(t, func(t *testing.T) kektest.Backend {
		k, err := soft.Open(filepath.Join(t.TempDir(), "kek.json"))
		if err != nil {
			t.Fatal(err)
		}
		return kektest.Backend{
			KEK:    k,
			Rotate: func(t *testing.T) { must(t, k.Rotate()) },
			Retire: func(t *testing.T) { must(t, k.Forget()) },
		}
	})
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek.json")
	k, err := soft.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := k.Wrap(t.Context(), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode(), err)
	}
	again, err := soft.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.Unwrap(t.Context(), w); err != nil {
		t.Fatalf("a reopened key file does not unwrap: %v", err)
	}
	for name, content := range map[string]string{
		"not json":      "{",
		"unknown field": `{"versions":{},"x":1}`,
		"no versions":   `{"versions":{}}`,
		"short key":     `{"versions":{"1":"AAAA"}}`,
		"bad version":   `{"versions":{"01":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}`,
	} {
		p := filepath.Join(t.TempDir(), "k.json")
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := soft.Open(p); err == nil {
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
