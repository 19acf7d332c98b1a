package command

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestTilesSourceRefuses: a hostile tiles endpoint cannot make custody
// follow it elsewhere, buffer an endless body, or read over plain HTTP.
func TestTilesSourceRefuses(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect/checkpoint":
			http.Redirect(w, r, "http://elsewhere.example/checkpoint", http.StatusFound)
		case "/endless/checkpoint":
			chunk := []byte(strings.Repeat("x", 4096))
			for range 1 << 12 { // 16 MiB, far past the limit
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		case "/long/checkpoint":
			w.Header().Set("Content-Length", "100000000")
			w.WriteHeader(http.StatusOK)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	for _, tt := range []struct{ path, mention string }{
		{"/redirect/", "redirect"},
		{"/endless/", "longer than"},
		{"/long/", "more than"},
		{"/missing/", "checkpoint"},
	} {
		src, err := newTilesSource(srv.URL+tt.path, roots)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := src.Checkpoint(t.Context()); err == nil || !strings.Contains(err.Error(), tt.mention) {
			t.Errorf("%s: got %v, want an error mentioning %q", tt.path, err, tt.mention)
		}
	}
	for _, bad := range []string{"http://catalog.example/", "catalog.example", "https://", "https://h/?q=1"} {
		if _, err := newTilesSource(bad, roots); err == nil {
			t.Errorf("newTilesSource(%q) accepted it", bad)
		}
	}
}
