package server

import (
	"net/http"
	"net/netip"
	"testing"
)

// FuzzClientAddr: any peer address and X-Forwarded-For header gives either
// no address or one that is not a trusted proxy; with an untrusted peer it
// is always the peer, whatever the header says.
func FuzzClientAddr(f *testing.F) {
	f.Add("127.0.0.1:443", "203.0.113.9, 10.1.2.3")
	f.Add("[::1]:1", "::ffff:1.2.3.4,,")
	f.Add("198.51.100.1:9", "x")
	f.Fuzz(func(t *testing.T, remote, xff string) {
		h := &Handler{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("10.0.0.0/8")}}
		r := &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": {xff}}}
		a := h.clientAddr(r)
		if a.IsValid() && h.trusted(a) {
			t.Fatalf("client %s is a trusted proxy", a)
		}
		if ap, err := netip.ParseAddrPort(remote); err == nil && !h.trusted(ap.Addr().Unmap()) && a != ap.Addr().Unmap() {
			t.Fatalf("untrusted peer %s, client %s", ap.Addr(), a)
		}
	})
}
