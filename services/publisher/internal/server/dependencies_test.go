package server_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
)

const depHex = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"

// The builder's resolved dependencies go into the signed provenance after
// the source; builder.id stays the authenticated caller even when a claim
// names another builder (ATTACKS.md #20).
func TestUploadRecordsResolvedDependencies(t *testing.T) {
	f := start(t)
	h := header("1.0.0", 0)
	h.SourceCommit = "3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a"
	h.ResolvedDependencies = []*publisherv1.ResourceDescriptor{
		{Uri: "oci://registry.example/base", Digest: map[string]string{"sha256": depHex}, Annotations: map[string]string{"kind": "base-image"}},
		{Uri: "spiffe://custody.test/builder/other", Name: "builder.id", Annotations: map[string]string{"kind": "build-env"}},
	}
	if _, err := upload(t.Context(), f.client(t, "/builder/ci"), h, strings.NewReader("with deps"), 4); err != nil {
		t.Fatal(err)
	}
	st, err := attest.ParseStatement(f.signer.statements[0])
	if err != nil {
		t.Fatal(err)
	}
	a, err := st.Artifact()
	if err != nil {
		t.Fatal(err)
	}
	want := []attest.ResourceDescriptor{
		{URI: "git+https://git.example/app", Digest: map[string]string{"gitCommit": h.SourceCommit}, Annotations: map[string]string{"kind": "source"}},
		{URI: "oci://registry.example/base", Digest: map[string]string{"sha256": depHex}, Annotations: map[string]string{"kind": "base-image"}},
		{URI: "spiffe://custody.test/builder/other", Name: "builder.id", Annotations: map[string]string{"kind": "build-env"}},
	}
	if diff := cmp.Diff(want, a.Dependencies); diff != "" {
		t.Errorf("resolved dependencies (-want +got):\n%s", diff)
	}
	if a.BuilderID != "spiffe://custody.test/builder/ci" {
		t.Errorf("builder.id %q: want the authenticated caller", a.BuilderID)
	}
}

func TestUploadRefusesBadDependencies(t *testing.T) {
	f := start(t)
	c := f.client(t, "/builder/ci")
	many := make([]*publisherv1.ResourceDescriptor, attest.MaxDependencies+1)
	for i := range many {
		many[i] = &publisherv1.ResourceDescriptor{Uri: "https://x/" + strings.Repeat("a", i)}
	}
	for name, deps := range map[string][]*publisherv1.ResourceDescriptor{
		"too many":     many,
		"empty":        {{}},
		"bad digest":   {{Digest: map[string]string{"sha256": "NOTHEX"}}},
		"long uri":     {{Uri: strings.Repeat("u", attest.MaxDependencyURILen+1)}},
		"control char": {{Uri: "a\nb"}},
		"duplicate":    {{Digest: map[string]string{"sha256": depHex}}, {Uri: "other", Digest: map[string]string{"sha256": depHex}}},
	} {
		h := header("9.0.0", 0)
		h.ResolvedDependencies = deps
		_, err := upload(t.Context(), c, h, strings.NewReader("x"), 1)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
		if len(status.Convert(err).Message()) > 8192 {
			t.Errorf("%s: message of %d bytes echoes the input", name, len(status.Convert(err).Message()))
		}
	}
	if len(f.signer.statements) != 0 {
		t.Errorf("%d statements signed for refused uploads", len(f.signer.statements))
	}
}
