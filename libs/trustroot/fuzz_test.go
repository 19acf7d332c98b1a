package trustroot_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
)

// seeds returns a draft and an envelope signed by two of three keys.
func seeds(f *testing.F) (draft, envelope []byte, keys []trustroot.Key) {
	c := newChainFor(f)
	draft, err := c.roots[0].Marshal()
	if err != nil {
		f.Fatal(err)
	}
	return draft, c.versions[0], c.w.c.Keys
}

func newChainFor(f *testing.F) *chain {
	w := &world{c: trustroottest.New(f, 3)}
	w.signing = trustroottest.SigningKey(f, w.c.Signers[0].Public(), "artifact", "artifact", 1, now)
	v1 := w.root(1)
	return &chain{w: w, roots: []*trustroot.Root{v1}, versions: [][]byte{w.c.Sign(f, v1, 0, 1)}}
}

func FuzzParseUnsigned(f *testing.F) {
	draft, _, _ := seeds(f)
	f.Add(draft)
	f.Add([]byte(`{"type":"https://custody.dev/trustroot/v1","version":1}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := trustroot.ParseUnsigned(b)
		if err != nil {
			if !errors.Is(err, trustroot.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// Whatever parses is valid, encodes canonically and parses back.
		canon, err := r.Marshal()
		if err != nil {
			t.Fatalf("parsed root does not marshal: %v", err)
		}
		again, err := trustroot.ParseUnsigned(canon)
		if err != nil {
			t.Fatalf("canonical form does not parse: %v", err)
		}
		if b2, _ := again.Marshal(); !bytes.Equal(canon, b2) {
			t.Fatalf("canonical form is not stable:\n%s\n%s", canon, b2)
		}
	})
}

func FuzzParse(f *testing.F) {
	_, env, _ := seeds(f)
	f.Add(env)
	f.Add([]byte(`{"payloadType":"application/vnd.custody.trustroot+json","payload":"e30=","signatures":[{"keyid":"k","sig":"AA=="}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := trustroot.Parse(b)
		if err != nil {
			if !errors.Is(err, trustroot.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("Parse returned an invalid root: %v", err)
		}
	})
}

func FuzzVerifyThreshold(f *testing.F) {
	_, env, keys := seeds(f)
	f.Add(env, 2)
	f.Add(env, 3)
	f.Add(env, 0)
	f.Fuzz(func(t *testing.T, b []byte, threshold int) {
		r, err := trustroot.VerifyThreshold(b, keys, threshold)
		if err != nil {
			if !errors.Is(err, trustroot.ErrMalformed) && !errors.Is(err, trustroot.ErrThreshold) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrThreshold", err)
			}
			return
		}
		// Only the seed's signatures verify: a change to the payload must
		// not pass.
		if threshold > 2 || threshold < 1 {
			t.Fatalf("threshold %d passed with two signatures", threshold)
		}
		want, _ := trustroot.Parse(env)
		got, _ := r.Marshal()
		if w, _ := want.Marshal(); !bytes.Equal(got, w) {
			t.Fatalf("a modified root verified:\n%s", got)
		}
	})
}
