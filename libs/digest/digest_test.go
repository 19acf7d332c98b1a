package digest

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	good := strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{name: "valid", in: "sha256:" + good, ok: true},
		{name: "empty", in: ""},
		{name: "no prefix", in: good},
		{name: "other algorithm", in: "sha512:" + good},
		{name: "upper-case prefix", in: "SHA256:" + good},
		{name: "upper-case hex", in: "sha256:" + strings.ToUpper(good)},
		{name: "short", in: "sha256:" + good[:63]},
		{name: "long", in: "sha256:" + good + "0"},
		{name: "not hex", in: "sha256:" + good[:63] + "g"},
		{name: "space", in: " sha256:" + good},
		{name: "newline after", in: "sha256:" + good + "\n"},
		{name: "NUL inside", in: "sha256:" + good[:32] + "\x00" + good[33:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Parse(tt.in)
			if tt.ok {
				if err != nil || h != good {
					t.Fatalf("Parse(%q) = %q, %v; want %q", tt.in, h, err, good)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error = %v, want ErrInvalid", tt.in, err)
			}
			if Valid(tt.in) {
				t.Errorf("Valid(%q) = true", tt.in)
			}
		})
	}
}

func TestParseErrorQuotesOnlyAPrefix(t *testing.T) {
	hostile := "sha256:" + strings.Repeat("Z", 100000)
	_, err := Parse(hostile)
	if err == nil {
		t.Fatal("want an error")
	}
	if len(err.Error()) > 400 { // %q may spell each of 64 bytes in 4
		t.Errorf("error is %d bytes; it must quote only a prefix of the input", len(err.Error()))
	}
}

func TestOf(t *testing.T) {
	// SHA-256 of the empty string.
	const want = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if got := Of(nil); got != want {
		t.Errorf("Of(nil) = %s, want %s", got, want)
	}
	if !Valid(Of([]byte("x"))) {
		t.Error("Of's result does not parse")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("ab", 32))
	f.Add("sha256:" + strings.Repeat("AB", 32))
	f.Add("sha256:")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if len(err.Error()) > 400 { // %q may spell each of 64 bytes in 4
				t.Fatalf("error is %d bytes", len(err.Error()))
			}
			return
		}
		// Accepted digests are canonical: decode and re-encode give the same text.
		b, derr := hex.DecodeString(h)
		if derr != nil || len(b) != 32 || FromSum(b) != s {
			t.Fatalf("Parse accepted %q, which is not canonical", s)
		}
	})
}
