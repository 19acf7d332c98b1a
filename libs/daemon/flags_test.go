package daemon

import (
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestStringsFlagReplacesEnv(t *testing.T) {
	tests := []struct {
		name string
		env  string
		args []string
		want []string
	}{
		{name: "nothing", want: nil},
		{name: "env only", env: "a,b", want: []string{"a", "b"}},
		{name: "flags only", args: []string{"--key", "x", "--key", "y"}, want: []string{"x", "y"}},
		{name: "one flag replaces env", env: "a,b", args: []string{"--key", "x"}, want: []string{"x"}},
		{name: "flags replace env", env: "a,b", args: []string{"--key", "x", "--key", "y"}, want: []string{"x", "y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFlags("t", func(k string) string {
				if k == "X_KEYS" {
					return tt.env
				}
				return ""
			})
			f.SetOutput(io.Discard)
			var got []string
			f.Strings(&got, "key", "X_KEYS", "")
			if err := f.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
		})
	}
}

// Entries keep their commas: the environment separates them by white space.
func TestEntriesKeepCommas(t *testing.T) {
	f := NewFlags("t", func(k string) string {
		if k == "X_KEYS" {
			return " old.pem\tnew.pem,valid-from=2026-12-31T00:00:00Z\n"
		}
		return ""
	})
	f.SetOutput(io.Discard)
	var got []string
	f.Entries(&got, "key", "X_KEYS", "")
	if err := f.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"old.pem", "new.pem,valid-from=2026-12-31T00:00:00Z"}, got); diff != "" {
		t.Errorf("from the environment (-want +got):\n%s", diff)
	}
	got = nil
	f = NewFlags("t", func(string) string { return "a.pem b.pem" })
	f.SetOutput(io.Discard)
	f.Entries(&got, "key", "X_KEYS", "")
	if err := f.Parse([]string{"--key", "c.pem,valid-from=2027-01-01T00:00:00Z"}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"c.pem,valid-from=2027-01-01T00:00:00Z"}, got); diff != "" {
		t.Errorf("the flag replaces the environment (-want +got):\n%s", diff)
	}
}
