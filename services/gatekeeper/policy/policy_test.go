package policy

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/util/channel"

	// custody.licence, the builtin the policy's licence rules call.
	_ "github.com/custody-dev/custody/services/gatekeeper/internal/policy"
)

// TestRego runs the Rego unit tests beside the policy, as `opa test .`
// would.
func TestRego(t *testing.T) {
	modules, store, err := tester.Load([]string{"."}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := tester.NewRunner().SetStore(store).RaiseBuiltinErrors(true).Run(t.Context(), modules)
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, r := range channel.Collect(ch) {
		ran++
		if r.Error != nil {
			t.Errorf("%s.%s: %v", r.Package, r.Name, r.Error)
		} else if r.Fail {
			t.Errorf("%s.%s: FAIL", r.Package, r.Name)
		}
	}
	if ran == 0 {
		t.Fatal("no Rego tests ran")
	}
	t.Logf("%d Rego tests", ran)
}

func TestDefaultIsTheFile(t *testing.T) {
	b, err := os.ReadFile(DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if !bytes.Equal(d, b) {
		t.Fatal("Default() differs from admission.rego")
	}
	d[0] ^= 1
	if !bytes.Equal(Default(), b) {
		t.Fatal("changing the result of Default changed the embedded policy")
	}
	if !strings.Contains(string(b), "package custody.admission\n") {
		t.Fatal("default policy is not package custody.admission")
	}
}
