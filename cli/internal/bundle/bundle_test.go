package bundle

import (
	"strings"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"

	"github.com/custody-dev/custody/libs/verify"
)

func sample() *Bundle {
	return New(verify.Evidence{
		Artifact: verify.Artifact{Name: "app", Version: "1", Digest: "sha256:" + strings.Repeat("a", 64), Size: 3},
		Envelope: []byte(`{}`),
		Entry:    verify.LogEntry{Index: 1, Leaf: []byte("leaf"), InclusionProof: [][]byte{make([]byte, 32)}, Checkpoint: []byte("cp")},
	}, [][]byte{[]byte(`{"payloadType":"x"}`)}, 2)
}

func TestRoundTripAndRejects(t *testing.T) {
	b, err := sample().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Artifact.Digest != sample().Artifact.Digest || got.Entry.Index != 1 || got.TrustRootVersion != 2 || string(got.TrustRoots[0]) != `{"payloadType":"x"}` {
		t.Fatalf("round trip lost data: %+v", got)
	}
	for name, in := range map[string]string{
		"other media type": strings.Replace(string(b), MediaType, "application/json", 1),
		"version 1 bundle": strings.Replace(string(b), MediaType, "application/vnd.custody.bundle.v1+json", 1),
		"unknown field":    strings.Replace(string(b), `"mediaType"`, `"x": 1, "mediaType"`, 1),
		"trailing":         string(b) + "{}",
		// Accepted before the one strict decoder:
		"trailing brace":    string(b) + "}",
		"trailing bracket":  string(b) + "]",
		"duplicate key":     strings.Replace(string(b), `"mediaType"`, `"mediaType": "x", "mediaType"`, 1),
		"no root version":   strings.Replace(string(b), `"trust_root_version": 2`, `"trust_root_version": 0`, 1),
		"too many roots":    strings.Replace(string(b), `"trust_roots": [`, `"trust_roots": [`+strings.Repeat(`"AA==",`, maxRoots), 1),
		"oversize":          string(b) + strings.Repeat(" ", MaxSize),
		"no log checkpoint": strings.Replace(string(b), `"checkpoint": "Y3A="`, `"checkpoint": ""`, 1),
	} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParse(f *testing.F) {
	b, _ := sample().Marshal()
	f.Add(b)
	f.Add([]byte(`{"mediaType":"` + MediaType + `"}`))
	c := trustroottest.New(f, 1)
	pinned, err := trustroot.Pin(c.Sign(f, c.Root(1, 1, time.Now(), nil, nil)))
	if err != nil {
		f.Fatal(err)
	}
	root, _ := pinned.Current(time.Now())
	f.Fuzz(func(t *testing.T, data []byte) {
		bd, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses walks and verifies without panicking, and
		// re-encodes.
		tr, _ := trustroot.Pin(pinned.Envelope())
		_ = tr.UpdateChain(bd.TrustRoots, time.Now())
		_ = verify.Check(bd.Evidence, root, verify.Options{}).Err()
		if _, err := bd.Marshal(); err != nil {
			t.Fatal(err)
		}
	})
}
