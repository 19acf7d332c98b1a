package attest

import "testing"

// BenchmarkNewVSA is the decision statement the gatekeeper encodes for
// every admission.
func BenchmarkNewVSA(b *testing.B) {
	d := decision()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewVSA(d); err != nil {
			b.Fatal(err)
		}
	}
}
