package verify

import "testing"

// The cache's bound: at most max entries, the oldest forgotten first, and
// a key added again keeps its first value and its place.
func TestBoundedForgetsTheOldest(t *testing.T) {
	b := newBounded[int, string](2)
	b.add(1, "one")
	b.add(2, "two")
	b.add(1, "again")
	if got := b.m[1]; got != "one" || len(b.m) != 2 {
		t.Fatalf("after re-adding 1: %v, want 1=one kept", b.m)
	}
	b.add(3, "three")
	if _, ok := b.m[1]; ok || len(b.m) != 2 || b.m[2] != "two" || b.m[3] != "three" {
		t.Fatalf("after a third key: %v, want 2 and 3 with 1 forgotten", b.m)
	}
	b.add(4, "four")
	if _, ok := b.m[2]; ok || len(b.m) != 2 {
		t.Fatalf("after a fourth key: %v, want 3 and 4", b.m)
	}
}
