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
