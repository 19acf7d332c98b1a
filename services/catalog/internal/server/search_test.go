package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

func TestSearchArtifacts(t *testing.T) {
	e := newEnv(t)
	pub := e.client(t, "/service/publisher")
	for _, a := range []struct{ name, version, content string }{
		{"app", "1.0.0", "a1"}, {"app", "1.1.0", "a2"}, {"lib", "1.0.0", "l1"}, {"app", "2.0.0", "a1"},
	} {
		if _, err := pub.RecordArtifact(t.Context(), recordReq(a.name, a.version, a.content)); err != nil {
			t.Fatal(err)
		}
	}
	// Deployments are recorded by the store's insert until deployment
	// events are logged.
	for _, d := range []struct{ name, version, env string }{{"app", "1.1.0", "prod"}, {"lib", "1.0.0", "staging"}} {
		rec, err := e.store.Artifact(t.Context(), d.name, d.version)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.InsertDeployment(t.Context(), &catalog.Deployment{ArtifactID: rec.ID, Environment: d.env,
			Actor: "spiffe://custody.test/deployer/" + d.env, DeployedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	search := func(c catalogv1.CatalogServiceClient, req *catalogv1.SearchArtifactsRequest) ([]string, int) {
		t.Helper()
		var (
			got   []string
			pages int
		)
		for {
			resp, err := c.SearchArtifacts(t.Context(), req)
			if err != nil {
				t.Fatalf("SearchArtifacts(%v): %v", req, err)
			}
			pages++
			for _, l := range resp.GetArtifacts() {
				got = append(got, l.GetArtifact().GetName()+"@"+l.GetArtifact().GetVersion())
			}
			if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" || pages > 10 {
				return got, pages
			}
		}
	}
	tests := []struct {
		name string
		req  *catalogv1.SearchArtifactsRequest
		want []string
	}{
		{"by name", &catalogv1.SearchArtifactsRequest{Name: "app"}, []string{"app@1.0.0", "app@1.1.0", "app@2.0.0"}},
		{"by name and version", &catalogv1.SearchArtifactsRequest{Name: "app", Version: "1.1.0"}, []string{"app@1.1.0"}},
		{"by digest", &catalogv1.SearchArtifactsRequest{Digest: digestOf("a1")}, []string{"app@1.0.0", "app@2.0.0"}},
		{"by builder", &catalogv1.SearchArtifactsRequest{BuilderId: "spiffe://custody.test/builder/ci"}, []string{"app@1.0.0", "app@1.1.0", "lib@1.0.0", "app@2.0.0"}},
		{"by source", &catalogv1.SearchArtifactsRequest{SourceRepo: "https://git.example/app", SourceCommit: "0123abcd"}, []string{"app@1.0.0", "app@1.1.0", "lib@1.0.0", "app@2.0.0"}},
		{"by channel", &catalogv1.SearchArtifactsRequest{Channel: "beta"}, nil},
		{"by key", &catalogv1.SearchArtifactsRequest{SignedByKeyId: "k1", Name: "lib"}, []string{"lib@1.0.0"}},
		{"by environment", &catalogv1.SearchArtifactsRequest{DeployedEnvironment: "prod"}, []string{"app@1.1.0"}},
		{"paged", &catalogv1.SearchArtifactsRequest{Name: "app", PageSize: 1}, []string{"app@1.0.0", "app@1.1.0", "app@2.0.0"}},
	}
	// Any member of the trust domain searches.
	for _, who := range []string{"/deployer/pipeline", "/builder/ci", "/edge/dev", "/auditor/eve"} {
		c := e.client(t, who)
		for _, tt := range tests {
			t.Run(who+" "+tt.name, func(t *testing.T) {
				got, _ := search(c, tt.req)
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
			})
		}
	}
	c := e.client(t, "/deployer/pipeline")
	// Each page carries the deployments of its artifacts, and only those.
	for _, tt := range []struct {
		req  *catalogv1.SearchArtifactsRequest
		want []string
	}{
		{&catalogv1.SearchArtifactsRequest{Name: "app"}, []string{"app@1.1.0 prod"}},
		{&catalogv1.SearchArtifactsRequest{}, []string{"app@1.1.0 prod", "lib@1.0.0 staging"}},
		{&catalogv1.SearchArtifactsRequest{Name: "app", Version: "1.0.0"}, nil},
	} {
		resp, err := c.SearchArtifacts(t.Context(), tt.req)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range resp.GetDeployments() {
			got = append(got, d.GetName()+"@"+d.GetVersion()+" "+d.GetEnvironment())
			if d.GetDeployedAt() == nil || d.GetDigest() == "" {
				t.Errorf("deployment %v: no time or digest", d)
			}
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("deployments of %v (-want +got):\n%s", tt.req, diff)
		}
	}
	if _, pages := search(c, &catalogv1.SearchArtifactsRequest{Name: "app", PageSize: 2}); pages != 2 {
		t.Errorf("3 artifacts in pages of 2: %d pages", pages)
	}
	first, err := c.SearchArtifacts(t.Context(), &catalogv1.SearchArtifactsRequest{Name: "app", PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	// What a hostile caller sends is refused before it reaches the store.
	for _, bad := range []*catalogv1.SearchArtifactsRequest{
		{Name: "app' OR '1'='1"}, {Digest: "sha256:1 OR 1=1"}, {BuilderId: "x"}, {PageSize: -1}, {PageToken: "junk"},
		{Name: "lib", PageToken: first.GetNextPageToken()}, // a token of another search
		{SourceRepo: strings.Repeat("r", 5000)}, {DeployedEnvironment: "prod; --"},
	} {
		if _, err := c.SearchArtifacts(t.Context(), bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("SearchArtifacts(%v): got %v, want InvalidArgument", bad, err)
		}
	}
}
