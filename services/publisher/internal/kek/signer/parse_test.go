package signer_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/custody-dev/custody/services/publisher/internal/kek"
	"github.com/custody-dev/custody/services/publisher/internal/kek/signer"
)

func TestParse(t *testing.T) {
	w, b, err := signer.Parse("signer:publisher:v12:AAECAw")
	if err != nil || w != (signer.Wrapped{Name: "publisher", Version: 12}) || !bytes.Equal(b, []byte{0, 1, 2, 3}) {
		t.Fatalf("Parse = %+v, %x, %v", w, b, err)
	}
	for _, bad := range []string{"", "signer:", "signer:publisher:v1:", "signer:publisher:v0:AAAA", "signer:publisher:v01:AAAA",
		"signer:publisher:v-1:AAAA", "signer:publisher:1:AAAA", "signer:Pub:v1:AAAA", "signer::v1:AAAA", "signer:publisher:v1:AAAA=",
		"signer:publisher:v99999999999:AAAA", "signer:publisher:v1:!!!!", "vault:v1:AAAA", "soft:v1:AAAA",
		"signer:publisher:v1:" + string(bytes.Repeat([]byte("A"), 300))} {
		if _, _, err := signer.Parse(bad); !errors.Is(err, kek.ErrUnwrap) {
			t.Errorf("Parse(%.40q): %v, want ErrUnwrap", bad, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"signer:publisher:v1:AAECAw", "signer:a:v2147483647:AA", "signer:publisher:v1:", "vault:v1:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, b, err := signer.Parse(s)
		if err != nil {
			if !errors.Is(err, kek.ErrUnwrap) {
				t.Fatalf("Parse error %v is not ErrUnwrap", err)
			}
			return
		}
		if w.Version < 1 || w.Name == "" || len(b) == 0 || len(b) > 256 {
			t.Fatalf("Parse(%q) accepted %+v with %d bytes", s, w, len(b))
		}
	})
}
