package trustroot_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
)

// A rotated edge token key is accepted until the end of its window and not
// at or after it; a new key not before its start; an open window always.
func TestEdgeTokenKeysAt(t *testing.T) {
	w := newWorld(t)
	oldPub, _, _ := ed25519.GenerateKey(rand.Reader)
	newPub, _, _ := ed25519.GenerateKey(rand.Reader)
	openPub, _, _ := ed25519.GenerateKey(rand.Reader)
	switchAt, until := now.Add(time.Hour), now.Add(2*time.Hour)
	r := w.root(1)
	r.EdgeTokenKeys = []trustroot.EdgeTokenKey{
		trustroottest.EdgeTokenKey(t, oldPub, nil, &until),
		trustroottest.EdgeTokenKey(t, newPub, &switchAt, nil),
		trustroottest.EdgeTokenKey(t, openPub, nil, nil),
	}
	// Through the envelope: what an edge holds is the parsed root.
	got, err := trustroot.Parse(w.c.Sign(t, r))
	if err != nil {
		t.Fatal(err)
	}
	ids := func(at time.Time) []string {
		var out []string
		for id, pub := range got.EdgeTokenKeysAt(at).Valid {
			if len(pub) != ed25519.PublicKeySize {
				t.Fatalf("key %s is %d bytes", id, len(pub))
			}
			out = append(out, id)
		}
		slices.Sort(out)
		return out
	}
	id := func(pub ed25519.PublicKey) string { return trustroottest.EdgeTokenKey(t, pub, nil, nil).ID }
	sorted := func(s ...string) []string { slices.Sort(s); return s }
	for _, tc := range []struct {
		name string
		at   time.Time
		want []string
	}{
		{"before the switch", now, sorted(id(oldPub), id(openPub))},
		{"at the switch: both (the transition window)", switchAt, sorted(id(oldPub), id(newPub), id(openPub))},
		{"just before the old key's end", until.Add(-time.Nanosecond), sorted(id(oldPub), id(newPub), id(openPub))},
		{"at the old key's end", until, sorted(id(newPub), id(openPub))},
		{"long after", until.Add(24 * time.Hour), sorted(id(newPub), id(openPub))},
	} {
		if g := ids(tc.at); !slices.Equal(g, tc.want) {
			t.Errorf("%s: keys %v, want %v", tc.name, g, tc.want)
		}
		// Every listed key is either valid or outside its window, never both.
		set := got.EdgeTokenKeysAt(tc.at)
		if len(set.Outside)+len(set.Valid) != 3 || set.Version != 1 {
			t.Errorf("%s: v%d, %d valid and %d outside, want v1 and 3 in all", tc.name, set.Version, len(set.Valid), len(set.Outside))
		}
		for id := range set.Outside {
			if slices.Contains(tc.want, id) {
				t.Errorf("%s: key %s both valid and outside", tc.name, id)
			}
		}
	}
}

func TestEdgeTokenKeyWindow(t *testing.T) {
	from, until := now, now.Add(time.Hour)
	for _, tc := range []struct {
		from, until *time.Time
		want        string
	}{
		{nil, nil, "valid always"},
		{&from, nil, "valid from " + now.UTC().Format(time.RFC3339)},
		{nil, &until, "valid until " + until.UTC().Format(time.RFC3339)},
		{&from, &until, "valid from " + now.UTC().Format(time.RFC3339) + " until " + until.UTC().Format(time.RFC3339)},
	} {
		if got := (trustroot.EdgeTokenKey{ValidFrom: tc.from, ValidUntil: tc.until}).Window(); got != tc.want {
			t.Errorf("Window = %q, want %q", got, tc.want)
		}
	}
}

type rootSource struct {
	roots [][]byte
	err   error
	asked []int64
}

func (s *rootSource) TrustRoots(_ context.Context, after int64) ([][]byte, error) {
	s.asked = append(s.asked, after)
	if s.err != nil {
		return nil, s.err
	}
	var out [][]byte
	for _, e := range s.roots {
		r, err := trustroot.Parse(e)
		if err != nil {
			return nil, err
		}
		if r.Version > after {
			out = append(out, e)
		}
	}
	return out, nil
}

func TestRefresh(t *testing.T) {
	w := newWorld(t)
	v1, v2, v3 := w.c.Sign(t, w.root(1)), w.c.Sign(t, w.root(2)), w.c.Sign(t, w.root(3))
	tr, err := trustroot.Pin(v1)
	if err != nil {
		t.Fatal(err)
	}
	src := &rootSource{err: errors.New("signer down")}
	if from, to, err := tr.Refresh(t.Context(), src, now); err == nil || from != 1 || to != 1 || !strings.Contains(err.Error(), "after v1") {
		t.Fatalf("Refresh with the source down = %d→%d, %v; want 1→1 and an error naming v1", from, to, err)
	}
	src.err = nil
	src.roots = [][]byte{v1, v2, v3}
	if from, to, err := tr.Refresh(t.Context(), src, now); err != nil || from != 1 || to != 3 {
		t.Fatalf("Refresh = %d→%d, %v; want 1→3", from, to, err)
	}
	// A rollback or a forged next version is refused; what was accepted stays.
	forged := trustroottest.New(t, 3)
	src.roots = [][]byte{forged.Sign(t, forged.Root(4, 2, now, nil, nil))}
	if _, to, err := tr.Refresh(t.Context(), src, now); err == nil || to != 3 || !strings.Contains(err.Error(), "staying on v3") {
		t.Fatalf("Refresh with a forged v4 = →%d, %v; want to stay on v3 with an error", to, err)
	}
	if !slices.Equal(src.asked, []int64{1, 1, 3}) {
		t.Errorf("asked after %v, want [1 1 3]", src.asked)
	}
}
