package admission

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidate(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0a", 32)
	tests := []struct {
		name string
		req  Request
		want string // empty: valid
	}{
		{"name and version", Request{Name: "app", Version: "1.0.0", Environment: "prod"}, ""},
		{"digest", Request{Digest: digest, Environment: "staging"}, ""},
		{"environment with dash", Request{Digest: digest, Environment: "eu-prod_2"}, ""},
		{"both", Request{Name: "app", Version: "1", Digest: digest, Environment: "prod"}, "not both"},
		{"neither", Request{Environment: "prod"}, "name and version (or digest) are required"},
		{"name only", Request{Name: "app", Environment: "prod"}, "name and version (or digest) are required"},
		{"upper-case digest", Request{Digest: strings.ToUpper(digest), Environment: "prod"}, "want sha256:<64 lowercase hex>"},
		{"short digest", Request{Digest: "sha256:abc", Environment: "prod"}, "want sha256:<64 lowercase hex>"},
		{"no environment", Request{Digest: digest}, "environment"},
		{"environment with a space", Request{Digest: digest, Environment: "prod "}, "environment"},
		{"environment upper case", Request{Digest: digest, Environment: "Prod"}, "environment"},
		{"environment too long", Request{Digest: digest, Environment: strings.Repeat("e", 65)}, "environment"},
		{"name too long", Request{Name: strings.Repeat("n", 1025), Version: "1", Environment: "prod"}, "name: want at most"},
		{"version with a newline", Request{Name: "app", Version: "1\n", Environment: "prod"}, "version: want at most"},
		{"name not UTF-8", Request{Name: "\xff", Version: "1", Environment: "prod"}, "name: want at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validate(tt.req)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestBound(t *testing.T) {
	many := make([]string, 40)
	for i := range many {
		many[i] = fmt.Sprintf("reason %d", i)
	}
	got := bound(many)
	if len(got) != maxReasons+1 || got[maxReasons] != "… and 24 more reasons" {
		t.Errorf("bound(40 reasons) = %d reasons ending %q", len(got), got[len(got)-1])
	}

	long := strings.Repeat("é", maxReasonLen) // 2 bytes each: cut mid-rune
	got = bound([]string{long, "a\nb\x1b[31mc", "\xffbad"})
	if len(got[0]) > maxReasonLen+len("…") || !utf8.ValidString(got[0]) || !strings.HasSuffix(got[0], "…") {
		t.Errorf("long reason bounded to %d bytes, valid UTF-8 %v", len(got[0]), utf8.ValidString(got[0]))
	}
	if got[1] != "a b [31mc" {
		t.Errorf("control characters kept: %q", got[1])
	}
	if !utf8.ValidString(got[2]) {
		t.Errorf("invalid UTF-8 kept: %q", got[2])
	}
}

func TestDedupe(t *testing.T) {
	got := dedupe([]string{"a", "b", "a", "c", "b"})
	if strings.Join(got, ",") != "a,b,c" {
		t.Errorf("dedupe = %q", got)
	}
}

func TestNewChecksConfig(t *testing.T) {
	_, err := New(Config{})
	if err == nil {
		t.Fatal("New with an empty config succeeded")
	}
	for _, want := range []string{"catalog, signer and publisher", "policy", "metrics and logger", "verifier SPIFFE ID", "pinned trust root"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
