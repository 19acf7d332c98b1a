package catalog

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
)

// limitStore records the limits SearchArtifacts is called with and returns
// that many artifacts.
type limitStore struct {
	Store
	limits []int
	after  []int64
}

func (s *limitStore) SearchArtifacts(_ context.Context, _ Query, afterID int64, limit int) ([]Listed, error) {
	s.limits, s.after = append(s.limits, limit), append(s.after, afterID)
	out := make([]Listed, limit)
	for i := range out {
		out[i].ID = afterID + int64(i) + 1
	}
	return out, nil
}

func TestSearchPageSizeIsBounded(t *testing.T) {
	for _, tt := range []struct{ asked, want int }{{0, MaxPageSize}, {1, 1}, {MaxPageSize, MaxPageSize}, {MaxPageSize + 1, MaxPageSize}, {math.MaxInt32, MaxPageSize}} {
		s := &limitStore{}
		c := New(Config{Store: s})
		list, next, err := c.SearchArtifacts(t.Context(), Query{Name: "app"}, tt.asked, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != tt.want || s.limits[0] != tt.want+1 || next == "" {
			t.Errorf("page size %d: %d returned, store asked for %d, next %q; want %d, %d and a token", tt.asked, len(list), s.limits[0], next, tt.want, tt.want+1)
		}
		// The token continues after the last artifact returned, with the
		// same filters only.
		if _, _, err := c.SearchArtifacts(t.Context(), Query{Name: "app"}, tt.asked, next); err != nil || s.after[1] != list[len(list)-1].ID {
			t.Errorf("next page: %v, after %v", err, s.after)
		}
		if _, _, err := c.SearchArtifacts(t.Context(), Query{Name: "other"}, tt.asked, next); !errors.Is(err, ErrInvalid) {
			t.Errorf("token with other filters: got %v, want ErrInvalid", err)
		}
	}
	if _, _, err := New(Config{Store: &limitStore{}}).SearchArtifacts(t.Context(), Query{}, -1, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative page size: got %v, want ErrInvalid", err)
	}
}

func TestSearchRefusesInvalidFilters(t *testing.T) {
	for _, q := range []Query{
		{Name: "app' OR 1=1 --"}, {Name: strings.Repeat("a", 1000)}, {Version: "1.0; DROP TABLE artifacts"},
		{Digest: "sha256:abc"}, {Digest: "md5:" + strings.Repeat("a", 32)}, {BuilderID: "not a spiffe id"},
		{BuilderID: "spiffe://t/builder/../x"}, {SourceRepo: strings.Repeat("r", 2000)}, {SourceRepo: "a\x00b"},
		{SourceCommit: "a b"}, {Channel: "stable%"}, {KeyID: strings.Repeat("k", 300)}, {KeyID: "\n"},
		{Environment: "prod env"}, {Environment: strings.Repeat("e", 65)}, {Environment: "p\x7f"},
	} {
		s := &limitStore{}
		if _, _, err := New(Config{Store: s}).SearchArtifacts(t.Context(), q, 10, ""); !errors.Is(err, ErrInvalid) || len(s.limits) != 0 {
			t.Errorf("SearchArtifacts(%+v): got %v (store called %d times), want ErrInvalid before the store", q, err, len(s.limits))
		}
	}
}

func TestSearchToken(t *testing.T) {
	fp := Query{Name: "app"}.fingerprint()
	for _, id := range []int64{1, 127, 128, 1 << 40, math.MaxInt64} {
		tok := encodeSearchToken(id, fp)
		if got, err := parseSearchToken(tok, fp); err != nil || got != id {
			t.Errorf("parseSearchToken(encodeSearchToken(%d)) = %d, %v", id, got, err)
		}
		if _, err := parseSearchToken(tok, Query{Name: "ap", Version: "p"}.fingerprint()); err == nil {
			t.Errorf("token %q accepted for another query", tok)
		}
	}
	if (Query{Name: "ab"}).fingerprint() == (Query{Name: "a", Version: "b"}).fingerprint() {
		t.Error("fingerprints of different queries collide on field boundaries")
	}
	for _, bad := range []string{"", "Ag", encodePageToken(5), encodeSearchToken(5, fp) + "A", encodeSearchToken(0, fp), "junk", strings.Repeat("A", 40)} {
		if id, err := parseSearchToken(bad, fp); err == nil {
			t.Errorf("parseSearchToken(%q) = %d, want an error", bad, id)
		}
	}
}

// FuzzSearchToken checks that parseSearchToken accepts exactly the tokens
// encodeSearchToken returns for the query.
func FuzzSearchToken(f *testing.F) {
	fp := Query{Channel: "stable"}.fingerprint()
	for _, s := range []string{encodeSearchToken(1, fp), encodeSearchToken(math.MaxInt64, fp), encodePageToken(3), "", "junk"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := parseSearchToken(tok, fp)
		if err != nil {
			return
		}
		if id <= 0 || encodeSearchToken(id, fp) != tok {
			t.Errorf("parseSearchToken(%q) = %d, which encodes as %q", tok, id, encodeSearchToken(id, fp))
		}
	})
}
