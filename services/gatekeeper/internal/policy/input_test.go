package policy

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/custody-dev/custody/libs/sbom"
)

// viaJSON is the input as its JSON encoding decodes to: what the policy
// saw before the input was built directly, and what value must equal.
func viaJSON(in Input) (ast.Value, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	return ast.ValueFromReader(bytes.NewReader(b))
}

func checkInputValue(t *testing.T, in Input) {
	t.Helper()
	want, wantErr := viaJSON(in)
	got, err := in.value()
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("value error %v, JSON encoding error %v", err, wantErr)
	}
	if err != nil {
		return
	}
	if got.Compare(want) != 0 {
		t.Fatalf("value differs from the input's JSON:\n got %v\nwant %v", got, want)
	}
}

func TestInputValueIsItsJSON(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Input)
	}{
		{"good", func(*Input) {}},
		{"nil lists", func(in *Input) { in.Verification.Messages, in.SBOM.Components, in.SBOM.Vulnerabilities = nil, nil, nil }},
		{"empty lists", func(in *Input) {
			in.Verification.Messages, in.SBOM.Components, in.SBOM.Vulnerabilities = []string{}, []sbom.Component{}, []Vulnerability{}
		}},
		{"failed checks", func(in *Input) {
			in.Verification = Verification{Signature: true, Messages: []string{"inclusion proof does not verify", `a "quoted" <tag> & more`}}
		}},
		{"SBOM", func(in *Input) {
			in.SBOM = SBOM{Attached: true, Components: []sbom.Component{
				{PURL: "pkg:npm/a@1.0.0", Name: "a", Version: "1.0.0", License: "MIT OR Apache-2.0"},
				{Name: "no-purl-no-version-no-licence"},
				{Name: "b", License: "GPL-3.0-only"},
			}, Vulnerabilities: []Vulnerability{
				{Advisory: "GHSA-aaaa-bbbb-cccc", Severity: "HIGH", Component: "pkg:npm/a@1.0.0", Reason: "introduced 0, fixed 2.0.0"},
				{Advisory: "OSV-2026-1", Severity: "UNKNOWN", Component: "b@", Uncertain: true},
			}}
		}},
		{"invalid UTF-8", func(in *Input) {
			in.Artifact.Name = "app\xff\xfe"
			in.Verification.Messages = []string{"bad \xc3 byte", "ok é"}
			in.SBOM.Components = []sbom.Component{{Name: "\x80", License: "MIT\xff"}}
		}},
		{"control characters", func(in *Input) { in.Environment, in.TrustDomain = "prod\n\t\x00", "\u2028\u2029" }},
		{"nanoseconds and zone", func(in *Input) {
			in.Artifact.CreatedAt = time.Date(2026, 12, 3, 17, 0, 0, 123456789, time.FixedZone("x", 3600+1800))
		}},
		{"zero time", func(in *Input) { in.Artifact.CreatedAt = time.Time{} }},
		{"year past 9999", func(in *Input) { in.Artifact.CreatedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"negative size", func(in *Input) { in.Artifact.Size = -1 << 63 }},
		{"large size", func(in *Input) { in.Artifact.Size = 1<<63 - 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := good()
			tt.modify(&in)
			checkInputValue(t, in)
		})
	}
}

// FuzzInputValue holds the directly built input equal to its JSON
// encoding for any strings the catalog, the SBOM or the verifier put in it.
func FuzzInputValue(f *testing.F) {
	f.Add("app", "1.0.0", "pkg:npm/a@1.0.0", "MIT", "message", int64(4), int64(1700000000), true)
	f.Add("\xff", "", "", "", "\x00\u2028", int64(-1), int64(-62135596800-1), false)
	f.Fuzz(func(t *testing.T, name, version, purl, licence, msg string, size, unix int64, ok bool) {
		in := good()
		in.Artifact.Name, in.Artifact.Version, in.Artifact.Size = name, version, size
		in.Artifact.CreatedAt = time.Unix(unix, 0)
		in.Verification.Signature = ok
		in.Verification.Messages = []string{msg, strings.ToUpper(msg)}
		in.SBOM = SBOM{Attached: ok, Components: []sbom.Component{{PURL: purl, Name: name, Version: version, License: licence}},
			Vulnerabilities: []Vulnerability{{Advisory: msg, Component: purl, Uncertain: ok}}}
		checkInputValue(t, in)
	})
}
