package catalog

import (
	"math"
	"testing"
)

func TestPageToken(t *testing.T) {
	for _, id := range []int64{1, 127, 128, 1 << 40, math.MaxInt64} {
		tok := encodePageToken(id)
		got, err := parsePageToken(tok)
		if err != nil || got != id {
			t.Errorf("parsePageToken(encodePageToken(%d)) = %d, %v", id, got, err)
		}
	}
	for _, bad := range []string{
		"", "AQ", "AQA", // no ID, ID 0
		"AYE", "AYEA", // truncated uvarint; 1 as an overlong uvarint
		"AgE",                  // another version
		"AQE=",                 // padding
		"AQE\n",                // not base64url
		"AYCAgICAgICAgIAB",     // beyond MaxInt64
		"AQEAAAAAAAAAAAAAAAAA", // too long
	} {
		if id, err := parsePageToken(bad); err == nil {
			t.Errorf("parsePageToken(%q) = %d, want an error", bad, id)
		}
	}
}

// FuzzPageToken checks that parsePageToken accepts exactly the tokens
// encodePageToken returns.
func FuzzPageToken(f *testing.F) {
	for _, s := range []string{encodePageToken(1), encodePageToken(1000), encodePageToken(math.MaxInt64), "", "AQ", "AYEA", "junk"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := parsePageToken(tok)
		if err != nil {
			return
		}
		if id <= 0 || encodePageToken(id) != tok {
			t.Errorf("parsePageToken(%q) = %d, which encodes as %q", tok, id, encodePageToken(id))
		}
	})
}
