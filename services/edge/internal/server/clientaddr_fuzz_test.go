package server

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// FuzzClientAddr: any peer address and X-Forwarded-For headers give either
// no address or one that is not a trusted proxy; with an untrusted peer it
// is always the peer, whatever the headers say; and the right-to-left walk
// agrees with splitting every hop out first (splitHops).
func FuzzClientAddr(f *testing.F) {
	f.Add("127.0.0.1:443", "203.0.113.9, 10.1.2.3", "")
	f.Add("[::1]:1", "::ffff:1.2.3.4,,", "10.0.0.1")
	f.Add("198.51.100.1:9", "x", "")
	f.Add("127.0.0.1:1", "203.0.113.9", "10.0.0.2, 10.0.0.1")
	f.Add("127.0.0.1:1", "", "")
	f.Fuzz(func(t *testing.T, remote, xff, xff2 string) {
		h := &Handler{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("10.0.0.0/8")}}
		r := &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": {xff, xff2}}}
		a := h.clientAddr(r)
		if want := splitHops(h, r); a != want {
			t.Fatalf("client %s, splitting every hop gives %s", a, want)
		}
		if a.IsValid() && h.trusted(a) {
			t.Fatalf("client %s is a trusted proxy", a)
		}
		if ap, err := netip.ParseAddrPort(remote); err == nil && !h.trusted(ap.Addr().Unmap()) && a != ap.Addr().Unmap() {
			t.Fatalf("untrusted peer %s, client %s", ap.Addr(), a)
		}
	})
}

// splitHops is clientAddr as first written: every hop split out, then
// walked from the right.
func splitHops(h *Handler, r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := ap.Addr().Unmap()
	if !h.trusted(addr) {
		return addr
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return netip.Addr{}
		}
		if a = a.Unmap(); !h.trusted(a) {
			return a
		}
	}
	return netip.Addr{}
}
