package attest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const hexA = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"

func dependencies() []ResourceDescriptor {
	return []ResourceDescriptor{
		{URI: "git+https://git.example/app", Digest: map[string]string{"gitCommit": "3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a"}, Annotations: map[string]string{AnnotationKind: KindSource}},
		{URI: "oci://registry.example/base@sha256:" + hexA, Digest: map[string]string{"sha256": hexA}, Name: "base", Annotations: map[string]string{AnnotationKind: KindBaseImage}},
		{URI: "https://ci.example/runners/linux", Annotations: map[string]string{AnnotationKind: KindBuildEnv}},
	}
}

func TestProvenanceWithDependenciesRoundTrip(t *testing.T) {
	a := artifact()
	a.Dependencies = dependencies()
	b, err := NewProvenance(a)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"resolvedDependencies":[{"uri":"git+https://git.example/app"`) {
		t.Fatalf("statement does not carry resolvedDependencies in buildDefinition:\n%s", b)
	}
	st, err := ParseStatement(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.Artifact()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, *got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestResourceDescriptorKey(t *testing.T) {
	for _, tc := range []struct {
		d    ResourceDescriptor
		want string
	}{
		{ResourceDescriptor{URI: "oci://x", Digest: map[string]string{"sha256": hexA, "sha512": "ab"}}, "sha256:" + hexA},
		{ResourceDescriptor{Digest: map[string]string{"sha512": "ab", "gitCommit": "cd"}}, "gitCommit:cd"},
		{ResourceDescriptor{URI: "https://ci.example/env"}, "uri:https://ci.example/env"},
	} {
		if got := tc.d.Key(); got != tc.want {
			t.Errorf("Key(%+v) = %q, want %q", tc.d, got, tc.want)
		}
		if !ValidDependencyKey(tc.want) {
			t.Errorf("ValidDependencyKey(%q) = false", tc.want)
		}
	}
	for _, k := range []string{"", "sha256:" + hexA[:63], "sha256:" + strings.ToUpper(hexA), "uri:", "nocolon", "bad alg:ab", "uri:a\nb", "sha1:xyz"} {
		if ValidDependencyKey(k) {
			t.Errorf("ValidDependencyKey(%q) = true", k)
		}
	}
}

func TestValidateDependencies(t *testing.T) {
	many := func(n int) []ResourceDescriptor {
		var out []ResourceDescriptor
		for i := range n {
			out = append(out, ResourceDescriptor{URI: fmt.Sprintf("https://x/%d", i)})
		}
		return out
	}
	long := strings.Repeat("a", MaxDependencyURILen+1)
	for _, tc := range []struct {
		name string
		deps []ResourceDescriptor
		want string // "" means valid
	}{
		{"none", nil, ""},
		{"typical", dependencies(), ""},
		{"at the limit", many(MaxDependencies), ""},
		{"too many", many(MaxDependencies + 1), "more than 256"},
		{"empty", []ResourceDescriptor{{Name: "x"}}, "needs a uri or a digest"},
		{"long uri", []ResourceDescriptor{{URI: long}}, "uri: want up to"},
		{"control in uri", []ResourceDescriptor{{URI: "a\x00b"}}, "uri: want up to"},
		{"bad utf-8 name", []ResourceDescriptor{{URI: "a", Name: "\xff"}}, "name: want"},
		{"short sha256", []ResourceDescriptor{{Digest: map[string]string{"sha256": "ab"}}}, "digest sha256"},
		{"upper hex", []ResourceDescriptor{{Digest: map[string]string{"sha256": strings.ToUpper(hexA)}}}, "digest sha256"},
		{"bad algorithm", []ResourceDescriptor{{Digest: map[string]string{"sha-256": hexA}}}, "digest algorithm"},
		{"empty value", []ResourceDescriptor{{Digest: map[string]string{"gitCommit": ""}}}, "digest gitCommit"},
		{"too many digests", []ResourceDescriptor{{Digest: map[string]string{"a": "1", "b": "1", "c": "1", "d": "1", "e": "1", "f": "1", "g": "1", "h": "1", "i": "1"}}}, "9 digests"},
		{"empty annotation key", []ResourceDescriptor{{URI: "a", Annotations: map[string]string{"": "v"}}}, "annotation"},
		{"duplicate", []ResourceDescriptor{{Digest: map[string]string{"sha256": hexA}}, {URI: "oci://other", Digest: map[string]string{"sha256": hexA}}}, "same resource as resolved dependency 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateDependencies(tc.deps)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("want an error containing %q", tc.want)
			case tc.want != "" && (!strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrMalformed)):
				t.Fatalf("error %v: want ErrMalformed containing %q", err, tc.want)
			}
			if err != nil && len(err.Error()) > 4096 && len(tc.deps) < 10 {
				t.Fatalf("error echoes too much input: %d bytes", len(err.Error()))
			}
		})
	}
	a := artifact()
	a.Dependencies = many(MaxDependencies + 1)
	if _, err := NewProvenance(a); !errors.Is(err, ErrMalformed) {
		t.Fatalf("NewProvenance with too many dependencies: %v", err)
	}
}

func TestParseDependencies(t *testing.T) {
	good := `{"resolvedDependencies":[{"uri":"oci://base","digest":{"sha256":"` + hexA + `"},"annotations":{"kind":"base-image"}}]}`
	deps, err := ParseDependencies([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(deps) != 1 || deps[0].Key() != "sha256:"+hexA || deps[0].Annotations[AnnotationKind] != KindBaseImage {
		t.Fatalf("parsed %+v", deps)
	}
	for _, bad := range []string{
		``,
		`[]`,
		`{"resolvedDependencies":[{"uri":"a"}]} {}`,
		`{"resolvedDependencies":[{"uri":"a","extra":1}]}`,
		`{"resolvedDependencies":[{"uri":"a","annotations":{"k":1}}]}`,
		`{"resolvedDependencies":[{"digest":{"sha256":"zz"}}]}`,
		`{"other":[]}`,
		`{"resolvedDependencies":` + strings.Repeat("[", 100000),
	} {
		if _, err := ParseDependencies([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseDependencies(%.40q): %v, want ErrMalformed", bad, err)
		}
	}
}

func TestSourceDependency(t *testing.T) {
	d, ok := SourceDependency("https://git.example/app", "3F2A3F2A3F2A3F2A3F2A3F2A3F2A3F2A3F2A3F2A")
	if !ok || d.URI != "git+https://git.example/app" || d.Key() != "gitCommit:3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a" {
		t.Fatalf("got %+v", d)
	}
	d, _ = SourceDependency("git+https://git.example/app", "main")
	if d.URI != "git+https://git.example/app" || d.Annotations["commit"] != "main" || d.Key() != "uri:git+https://git.example/app" {
		t.Fatalf("got %+v", d)
	}
	if _, ok := SourceDependency("", "abc"); ok {
		t.Fatal("a source without a repository")
	}
}

func FuzzParseDependencies(f *testing.F) {
	f.Add([]byte(`{"resolvedDependencies":[{"uri":"oci://base","digest":{"sha256":"` + hexA + `"},"name":"b","annotations":{"kind":"base-image"}}]}`))
	f.Add([]byte(`{"resolvedDependencies":[]}`))
	f.Add([]byte(`{"resolvedDependencies":[{"digest":{"gitCommit":"abc"}},{"uri":"x"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		deps, err := ParseDependencies(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if err := ValidateDependencies(deps); err != nil {
			t.Fatalf("parsed dependencies do not validate: %v", err)
		}
		seen := map[string]bool{}
		for _, d := range deps {
			k := d.Key()
			if !ValidDependencyKey(k) {
				t.Fatalf("key %q of a valid descriptor is not a valid key", k)
			}
			if seen[k] {
				t.Fatalf("duplicate key %q accepted", k)
			}
			seen[k] = true
		}
		// What a builder claims must fit a statement.
		a := artifact()
		a.Dependencies = deps
		if _, err := NewProvenance(a); err != nil {
			t.Fatalf("valid dependencies refused by NewProvenance: %v", err)
		}
	})
}
