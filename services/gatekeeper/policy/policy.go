// Package policy holds the gatekeeper's default admission policy, in Rego,
// as an OPA bundle: .manifest and admission.rego.
package policy

import (
	"embed"
	"io/fs"
)

//go:embed admission.rego
var admission []byte

//go:embed .manifest admission.rego
var bundle embed.FS

// DefaultName is the file name under which the default policy is compiled
// and reported.
const DefaultName = "admission.rego"

// BundleName names the embedded default bundle in logs and errors.
const BundleName = "builtin:services/gatekeeper/policy"

// Default returns the bytes of the default admission policy, package
// custody.admission. Each call returns a fresh copy.
func Default() []byte {
	return append([]byte(nil), admission...)
}

// Bundle returns the default policy bundle: this directory's .manifest
// (revision "builtin") and admission.rego, without the Rego tests.
func Bundle() fs.FS { return bundle }
