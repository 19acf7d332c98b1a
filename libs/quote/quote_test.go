package quote

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPrefix(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "short", in: "abc", want: "abc"},
		{name: "exactly the limit", in: strings.Repeat("a", MaxLen), want: strings.Repeat("a", MaxLen)},
		{name: "one over", in: strings.Repeat("a", MaxLen+1), want: strings.Repeat("a", MaxLen) + "…"},
		{name: "cut inside a rune", in: strings.Repeat("a", MaxLen-1) + "é", want: strings.Repeat("a", MaxLen-1) + "…"},
		{name: "invalid UTF-8 dropped", in: "a\xffb", want: "ab"},
		{name: "empty", in: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Prefix(tt.in); got != tt.want {
				t.Errorf("Prefix(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzPrefix(f *testing.F) {
	f.Add("hello")
	f.Add(strings.Repeat("é", 40))
	f.Add("\xff\xfe")
	f.Fuzz(func(t *testing.T, s string) {
		got := Prefix(s)
		if !utf8.ValidString(got) {
			t.Fatalf("Prefix(%q) = %q: not UTF-8", s, got)
		}
		if len(got) > MaxLen+len("…") {
			t.Fatalf("Prefix(%q) is %d bytes", s, len(got))
		}
		if !strings.HasPrefix(s, strings.TrimSuffix(got, "…")) && utf8.ValidString(s) {
			t.Fatalf("Prefix(%q) = %q is not a prefix", s, got)
		}
	})
}
