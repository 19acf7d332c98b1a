package server_test

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/vex"
)

// vexDoc is an OpenVEX document saying advisory id does not affect the
// artifact with digest d.
func vexDoc(d, id string) []byte {
	return []byte(`{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://custody.example/vex/1","author":"security",
 "timestamp":"2026-12-03T10:00:00Z","version":1,"statements":[{"vulnerability":{"name":"` + id + `"},
 "products":[{"@id":"` + d + `"}],"status":"not_affected","justification":"vulnerable_code_not_in_execute_path"}]}`)
}

// TestAddVEX: a security identity's document is logged as a vex.added
// entry about the artifact's digest with the identity as actor, holding
// the document, and ListVex serves it proved, by name@version and by
// digest; an entry about another artifact is not listed.
func TestAddVEX(t *testing.T) {
	e := newEnv(t)
	pub := e.client(t, "/service/publisher")
	for _, v := range []string{"1.0.0", "2.0.0"} {
		if _, err := pub.RecordArtifact(t.Context(), recordReq("app", v, "app "+v)); err != nil {
			t.Fatal(err)
		}
	}
	d1 := digestOf("app 1.0.0")
	sec := e.client(t, "/security/triage")
	resp, err := sec.AddVex(t.Context(), &catalogv1.AddVexRequest{Name: "app", Version: "1.0.0", Document: vexDoc(d1, "GHSA-jf85-cpcp-j695")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDigest() != d1 || resp.GetStatements() != 1 || resp.GetName() != "app" {
		t.Errorf("response %v", resp)
	}
	_, le := checkEntry(t, e.vkey, resp.GetEntry())
	if le.Type != tlog.TypeVEXAdded || le.Actor != "spiffe://custody.test/security/triage" || le.Subject.Digest != d1 {
		t.Errorf("entry %+v: want vex.added by the security identity about %s", le, d1)
	}
	var details struct {
		Name, Version, Digest string
		Document              json.RawMessage
	}
	if err := json.Unmarshal(le.Details, &details); err != nil {
		t.Fatal(err)
	}
	if doc, err := vex.Parse(details.Document); err != nil || doc.About(d1) != nil || details.Version != "1.0.0" {
		t.Errorf("logged document: %v (%s)", err, le.Details)
	}
	// By digest, for the other artifact: logged as well.
	if _, err := sec.AddVex(t.Context(), &catalogv1.AddVexRequest{Digest: digestOf("app 2.0.0"), Document: vexDoc(digestOf("app 2.0.0"), "GHSA-x")}); err != nil {
		t.Fatal(err)
	}

	reader := e.client(t, "/service/gatekeeper")
	for _, req := range []*catalogv1.ListVexRequest{{Name: "app", Version: "1.0.0"}, {Digest: d1}} {
		list, err := reader.ListVex(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if len(list.GetEntries()) != 1 || list.GetTruncated() || list.GetEntries()[0].GetIndex() != resp.GetEntry().GetIndex() {
			t.Fatalf("ListVex %v: %v, want the one entry %d", req, list, resp.GetEntry().GetIndex())
		}
		checkEntry(t, e.vkey, list.GetEntries()[0])
	}
	if _, err := reader.ListVex(t.Context(), &catalogv1.ListVexRequest{Name: "app", Version: "9.9.9"}); status.Code(err) != codes.NotFound {
		t.Errorf("ListVex of an unknown artifact: %v, want NotFound", err)
	}
}

// TestAddVEXRefused: only security identities may add VEX documents (not
// admins, builders, edges, the gatekeeper or the publisher), and a
// document that does not parse or is about another artifact is
// InvalidArgument; nothing refused is logged.
func TestAddVEXRefused(t *testing.T) {
	e := newEnv(t)
	if _, err := e.client(t, "/service/publisher").RecordArtifact(t.Context(), recordReq("app", "1.0.0", "app 1.0.0")); err != nil {
		t.Fatal(err)
	}
	d := digestOf("app 1.0.0")
	size := func() uint64 {
		n, err := e.log.Size(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := size()
	for _, p := range []string{"/builder/ci", "/edge/dev", "/service/gatekeeper", "/service/publisher", "/service/signer", "/admin/ops", "/deployer/pipeline", "/approver/alice"} {
		_, err := e.client(t, p).AddVex(t.Context(), &catalogv1.AddVexRequest{Name: "app", Version: "1.0.0", Document: vexDoc(d, "GHSA-1")})
		if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "spiffe://custody.test"+p) {
			t.Errorf("%s: %v, want PermissionDenied naming the caller", p, err)
		}
	}
	sec := e.client(t, "/security/triage")
	for name, req := range map[string]*catalogv1.AddVexRequest{
		"another artifact's digest in the products": {Name: "app", Version: "1.0.0", Document: vexDoc(digestOf("other"), "GHSA-1")},
		"not OpenVEX":                {Name: "app", Version: "1.0.0", Document: []byte(`{"statements":[]}`)},
		"too big":                    {Name: "app", Version: "1.0.0", Document: append(vexDoc(d, "GHSA-1"), make([]byte, vex.MaxDocBytes)...)},
		"no artifact":                {Document: vexDoc(d, "GHSA-1")},
		"name and digest":            {Name: "app", Version: "1.0.0", Digest: d, Document: vexDoc(d, "GHSA-1")},
		"unknown digest":             {Digest: digestOf("nothing"), Document: vexDoc(digestOf("nothing"), "GHSA-1")},
		"unknown name":               {Name: "nope", Version: "1.0.0", Document: vexDoc(d, "GHSA-1")},
		"malformed digest":           {Digest: "sha256:xyz", Document: vexDoc(d, "GHSA-1")},
		"affected without an action": {Name: "app", Version: "1.0.0", Document: []byte(strings.Replace(string(vexDoc(d, "GHSA-1")), `"status":"not_affected"`, `"status":"affected"`, 1))},
	} {
		_, err := sec.AddVex(t.Context(), req)
		want := codes.InvalidArgument
		if strings.HasPrefix(name, "unknown") {
			want = codes.NotFound
		}
		if status.Code(err) != want {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	if after := size(); after != before {
		t.Errorf("log grew from %d to %d entries: a refused VEX was logged", before, after)
	}
	list, err := sec.ListVex(t.Context(), &catalogv1.ListVexRequest{Digest: d})
	if err != nil || len(list.GetEntries()) != 0 {
		t.Errorf("ListVex after refusals: %v, %v; want none", list, err)
	}
}
