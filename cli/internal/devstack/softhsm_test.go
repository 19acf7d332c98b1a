package devstack

import (
	"slices"
	"strings"
	"testing"

	"github.com/custody-dev/custody/libs/daemon"
)

func TestHSMArgs(t *testing.T) {
	s := &Stack{Services: map[string]daemon.Endpoints{}}
	planned := map[string]string{"signer": "127.0.0.1:1", "catalog": "127.0.0.1:2"}
	for _, tt := range []struct {
		hsm                bool
		signer, publisher  []string
		notSigner, notPubl string
	}{
		{true, []string{"--key-backend pkcs11", "--wrapping-key publisher"}, []string{"--kek signer", "--signer-kek publisher"}, "--keystore", "--soft-kek-file"},
		{false, []string{"--keystore"}, []string{"--kek soft"}, "--wrapping-key", "--signer-kek"},
	} {
		l := Layout{Dir: t.TempDir(), HSM: tt.hsm}
		sa, pa := strings.Join(args(l, "signer", s, planned), " "), strings.Join(args(l, "publisher", s, planned), " ")
		for _, w := range tt.signer {
			if !strings.Contains(sa, w) {
				t.Errorf("hsm=%v: signer args %q lack %q", tt.hsm, sa, w)
			}
		}
		for _, w := range tt.publisher {
			if !strings.Contains(pa, w) {
				t.Errorf("hsm=%v: publisher args %q lack %q", tt.hsm, pa, w)
			}
		}
		if strings.Contains(sa, tt.notSigner) || strings.Contains(pa, tt.notPubl) {
			t.Errorf("hsm=%v: signer %q / publisher %q mix the back ends", tt.hsm, sa, pa)
		}
		if tt.hsm && !slices.Contains(args(l, "signer", s, planned), "--dev") {
			t.Error("the HSM signer is not in dev mode")
		}
	}
}
