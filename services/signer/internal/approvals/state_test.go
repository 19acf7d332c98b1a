package approvals

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

const seedState = `{"version":1,"requests":[{"id":"0123456789abcdef","name":"app","version":"1.0.0",` +
	`"digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","channel":"prod","key_name":"artifact",` +
	`"builder_id":"spiffe://custody.test/builder/ci","source_repo":"https://git.example/app","source_commit":"abc","state":"rejected","quorum":2,` +
	`"approvals":[{"approver":"spiffe://custody.test/approver/alice","approved_at":"2026-12-01T12:00:00Z","expires_at":"2026-12-02T12:00:00Z"}],` +
	`"created_at":"2026-12-01T12:00:00Z","expires_at":"2026-12-04T12:00:00Z","rejected_by":"spiffe://custody.test/approver/bob","reject_reason":"no"}]}`

// A parsed state file writes back to the same requests, and nothing panics.
func FuzzParseState(f *testing.F) {
	for _, s := range []string{seedState, `{"version":1,"requests":[]}`, `{"version":1,"requests":null}`, `{}`, `[]`, `{"version":1,"requests":[null]}`, "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		reqs, err := parseState(b)
		if err != nil {
			return
		}
		out, err := marshalState(reqs)
		if err != nil {
			t.Fatalf("marshal a parsed state: %v", err)
		}
		again, err := parseState(out)
		if err != nil {
			t.Fatalf("reparse a written state: %v\n%s", err, out)
		}
		sortPtrs := func(rs []*Request) []Request {
			v := make([]Request, len(rs))
			for i, r := range rs {
				v[i] = *r
			}
			sortRequests(v)
			return v
		}
		if diff := cmp.Diff(sortPtrs(reqs), sortPtrs(again)); diff != "" {
			t.Fatalf("round trip (-parsed +reparsed):\n%s", diff)
		}
	})
}

func TestParseStateSeed(t *testing.T) {
	reqs, err := parseState([]byte(seedState))
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 1 || reqs[0].State != Rejected || len(reqs[0].Approvals) != 1 {
		t.Fatalf("parsed %+v", reqs)
	}
}
