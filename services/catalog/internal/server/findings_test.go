package server_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/sbom"
)

func cdxWith(purls ...string) []byte {
	doc := `{"bomFormat":"CycloneDX","specVersion":"1.6","components":[`
	for i, p := range purls {
		if i > 0 {
			doc += ","
		}
		doc += `{"type":"library","name":"c` + string(rune('a'+i)) + `","purl":"` + p + `"}`
	}
	return []byte(doc + `]}`)
}

// TestListFindings: stored advisories are matched against stored SBOMs
// both ways, with each ecosystem's ordering; an advisory imported after
// the SBOM is found; no SBOM is NotFound, not "no findings".
func TestListFindings(t *testing.T) {
	e := newEnv(t)
	pub := e.client(t, "/service/publisher")
	for _, v := range []struct{ version, content string }{{"1.0.0", "a1"}, {"2.0.0", "a2"}, {"3.0.0", "a3"}, {"4.0.0", "a4"}} {
		if _, err := pub.RecordArtifact(t.Context(), recordReq("app", v.version, v.content)); err != nil {
			t.Fatal(err)
		}
	}
	sboms := map[string][]byte{
		"1.0.0": cdxWith("pkg:npm/lodash@4.17.11", "pkg:golang/golang.org/x/text@v0.3.6", "pkg:pypi/jinja2@2.11.3"),
		"2.0.0": cdxWith("pkg:npm/lodash@4.17.21", "pkg:golang/golang.org/x/text@v0.3.7-0.20210503195748-5c7c50ebbd4f"),
		// A PyPI name spelled in another case than the advisory's.
		"4.0.0": cdxWith("pkg:pypi/Jinja2@2.11.2"),
	}
	contents := map[string]string{"1.0.0": "a1", "2.0.0": "a2", "4.0.0": "a4"}
	for v, doc := range sboms {
		if _, err := pub.RecordSBOM(t.Context(), sbomReq("app", v, contents[v], doc), sbom.CallOptions()...); err != nil {
			t.Fatal(err)
		}
	}
	reader := e.client(t, "/deployer/prod")
	list := func(req *catalogv1.ListFindingsRequest) []string {
		t.Helper()
		resp, err := reader.ListFindings(t.Context(), req)
		if err != nil {
			t.Fatalf("ListFindings(%v): %v", req, err)
		}
		var out []string
		for _, f := range resp.GetFindings() {
			out = append(out, f.GetName()+"@"+f.GetVersion()+" "+f.GetAdvisoryId()+" "+f.GetComponent().GetPurl()+" "+f.GetSeverity())
			if f.GetReason() == "" || f.GetDigest() == "" {
				t.Errorf("finding %v without reason or digest", f)
			}
		}
		return out
	}
	if got := list(&catalogv1.ListFindingsRequest{Name: "app", Version: "1.0.0"}); len(got) != 0 {
		t.Errorf("findings before any import: %v", got)
	}
	if _, err := importDocs(t, e.client(t, "/security/osv-sync"), osvDocs(t)); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"app@1.0.0 GHSA-jf85-cpcp-j695 pkg:npm/lodash@4.17.11 CRITICAL",
		"app@1.0.0 GO-2021-0113 pkg:golang/golang.org/x/text@v0.3.6 UNKNOWN",
	}
	if got := list(&catalogv1.ListFindingsRequest{Name: "app", Version: "1.0.0"}); !slices.Equal(got, want) {
		t.Errorf("findings of app@1.0.0: %v, want %v", got, want)
	}
	if got := list(&catalogv1.ListFindingsRequest{Digest: digestOf("a1")}); !slices.Equal(got, want) {
		t.Errorf("findings of app@1.0.0 by digest: %v, want %v", got, want)
	}
	// The pseudo-version before 0.3.7 is affected; lodash 4.17.21 is not.
	want2 := []string{"app@2.0.0 GO-2021-0113 pkg:golang/golang.org/x/text@v0.3.7-0.20210503195748-5c7c50ebbd4f UNKNOWN"}
	if got := list(&catalogv1.ListFindingsRequest{Name: "app", Version: "2.0.0"}); !slices.Equal(got, want2) {
		t.Errorf("findings of app@2.0.0: %v, want %v", got, want2)
	}
	// The other way: which artifacts an advisory affects.
	if got := list(&catalogv1.ListFindingsRequest{AdvisoryId: "GO-2021-0113"}); !slices.Equal(got, []string{want[1], want2[0]}) {
		t.Errorf("artifacts affected by GO-2021-0113: %v", got)
	}
	if got := list(&catalogv1.ListFindingsRequest{AdvisoryId: "GHSA-jf85-cpcp-j695"}); !slices.Equal(got, want[:1]) {
		t.Errorf("artifacts affected by GHSA-jf85-cpcp-j695: %v", got)
	}
	// jinja2 2.11.3 is fixed; Jinja2 2.11.2 is the same package, affected,
	// and found from the advisory as from the artifact.
	want3 := list(&catalogv1.ListFindingsRequest{Name: "app", Version: "4.0.0"})
	if len(want3) != 1 || !strings.HasPrefix(want3[0], "app@4.0.0 PYSEC-2021-66 pkg:pypi/Jinja2@2.11.2 ") {
		t.Errorf("findings of app@4.0.0: %v, want PYSEC-2021-66 on pkg:pypi/Jinja2@2.11.2", want3)
	}
	if got := list(&catalogv1.ListFindingsRequest{AdvisoryId: "PYSEC-2021-66"}); !slices.Equal(got, want3) {
		t.Errorf("artifacts affected by PYSEC-2021-66: %v, want %v", got, want3)
	}
	for _, tt := range []struct {
		req  *catalogv1.ListFindingsRequest
		code codes.Code
	}{
		{&catalogv1.ListFindingsRequest{Name: "app", Version: "3.0.0"}, codes.NotFound}, // no SBOM
		{&catalogv1.ListFindingsRequest{Name: "app", Version: "9.9.9"}, codes.NotFound},
		{&catalogv1.ListFindingsRequest{AdvisoryId: "GHSA-none-none-none"}, codes.NotFound},
		{&catalogv1.ListFindingsRequest{Name: "app", Version: "1.0.0", AdvisoryId: "GO-2021-0113"}, codes.InvalidArgument},
		{&catalogv1.ListFindingsRequest{}, codes.InvalidArgument},
		{&catalogv1.ListFindingsRequest{AdvisoryId: "'; DROP TABLE advisories; --"}, codes.InvalidArgument},
		{&catalogv1.ListFindingsRequest{Digest: "sha256:zz"}, codes.InvalidArgument},
	} {
		if _, err := reader.ListFindings(t.Context(), tt.req); status.Code(err) != tt.code {
			t.Errorf("ListFindings(%v): %v, want %v", tt.req, err, tt.code)
		}
	}
}
