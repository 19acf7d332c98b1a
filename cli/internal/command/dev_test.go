package command

import "testing"

// An extra edge URL is checked like the broker's --edge-url: the token
// travels in the URL, so only https, and nothing the broker would append
// to.
func TestCheckEdgeURL(t *testing.T) {
	for _, ok := range []string{"https://127.0.0.1:8443", "https://edge.example", "https://edge.example/"} {
		if err := checkEdgeURL(ok); err != nil {
			t.Errorf("checkEdgeURL(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "http://127.0.0.1:8443", "127.0.0.1:8443", "https://", "https://u:p@edge.example",
		"https://edge.example/v1/blobs", "https://edge.example?token=x", "https://edge.example#f", "ftp://edge.example"} {
		if err := checkEdgeURL(bad); err == nil {
			t.Errorf("checkEdgeURL(%q) accepted", bad)
		}
	}
}
