package approvals_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/custody-dev/custody/services/signer/internal/approvals"
)

// TestHostileRequestIDs: an id that cannot be a request id is invalid input,
// and the error quotes at most a short prefix of it.
func TestHostileRequestIDs(t *testing.T) {
	f := newFixture(t)
	for name, id := range map[string]string{
		"empty":      "",
		"upper case": "ABCDEF0123456789",
		"too long":   strings.Repeat("a", 1<<20),
		"not hex":    "zzzzzzzzzzzzzzzz",
	} {
		_, err := f.svc.Approve(t.Context(), id, alice)
		if !errors.Is(err, approvals.ErrInvalid) {
			t.Errorf("%s: Approve = %v, want ErrInvalid", name, err)
		}
		if err != nil && len(err.Error()) > 400 {
			t.Errorf("%s: Approve error is %d bytes", name, len(err.Error()))
		}
		if _, err := f.svc.Reject(t.Context(), id, alice, "no"); !errors.Is(err, approvals.ErrInvalid) {
			t.Errorf("%s: Reject = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := f.svc.Approve(t.Context(), "0123456789abcdef", alice); !errors.Is(err, approvals.ErrNotFound) {
		t.Errorf("well-formed unknown id: %v, want ErrNotFound", err)
	}
}
