// Package policy holds the gatekeeper's default admission policy, in Rego.
package policy

import _ "embed"

//go:embed admission.rego
var admission []byte

// DefaultName is the file name under which the default policy is compiled
// and reported.
const DefaultName = "admission.rego"

// Default returns the bytes of the default admission policy, package
// custody.admission. Each call returns a fresh copy.
func Default() []byte {
	return append([]byte(nil), admission...)
}
