package advisory

import "testing"

// SetMaxAdvisories lowers the set's count bound for one test.
func SetMaxAdvisories(t *testing.T, n int) {
	old := maxAdvisories
	maxAdvisories = n
	t.Cleanup(func() { maxAdvisories = old })
}
