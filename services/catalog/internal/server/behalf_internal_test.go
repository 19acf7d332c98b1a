package server

import (
	"context"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/metadata"
)

// FuzzOnBehalfOf: the on-behalf-of header is untrusted bytes (any peer can
// send it); its parser never panics, and what it accepts is one valid
// SPIFFE ID that reads back as sent.
func FuzzOnBehalfOf(f *testing.F) {
	for _, s := range []string{"spiffe://custody.test/service/publisher", "", "spiffe://", "spiffe://a/b/../c", "http://x/y",
		"spiffe://custody.test/service/publisher\x00", "spiffe://UPPER/x", "spiffe://custody.test/%2e"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, v string, twice bool) {
		md := metadata.Pairs(OnBehalfOfHeader, v)
		if twice {
			md.Append(OnBehalfOfHeader, v)
		}
		id, has, err := onBehalfOf(metadata.NewIncomingContext(context.Background(), md))
		if !has {
			t.Fatal("a header that is present reported absent")
		}
		if twice && err == nil {
			t.Fatal("two values accepted")
		}
		if err != nil {
			return
		}
		if _, perr := spiffeid.FromString(id.String()); perr != nil || id.String() != v {
			t.Fatalf("accepted %q as %q (%v)", v, id, perr)
		}
	})
}

// TestNoHeaderNoActor: without the header nothing is reported.
func TestNoHeaderNoActor(t *testing.T) {
	if _, has, err := onBehalfOf(context.Background()); has || err != nil {
		t.Fatalf("no metadata: has %v, %v", has, err)
	}
}
