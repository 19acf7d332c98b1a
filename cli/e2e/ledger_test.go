package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestLedgerCommands publishes three artifacts built from each other on the
// real dev stack, admits one, and checks what custody audit, lineage,
// search and inventory answer about them.
func TestLedgerCommands(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	const commit = "0123456789abcdef0123456789abcdef01234567"
	digestOf := func(out string) string {
		t.Helper()
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "digest" {
				return f[1]
			}
		}
		t.Fatalf("no digest in publish output:\n%s", out)
		return ""
	}
	// base's builder also names the image it built on, in a provenance file.
	image := strings.Repeat("c", 64)
	prov := filepath.Join(work, "provenance.json")
	if err := os.WriteFile(prov, []byte(`{"resolvedDependencies":[{"uri":"oci://registry.example/debian","digest":{"sha256":"`+image+`"},"annotations":{"kind":"base-image"}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	base := digestOf(s.mustCustody("publish", randomFile(t, work, "base", 2<<10), "--name", "base", "--version", "1.0.0", "--channel", "staging",
		"--source-repo", "https://git.example/base", "--source-commit", commit, "--provenance", prov))
	lib := digestOf(s.mustCustody("publish", randomFile(t, work, "lib", 2<<10), "--name", "lib", "--version", "2.0.0", "--channel", "staging",
		"--depends-on", "base@1.0.0="+base))
	app := digestOf(s.mustCustody("publish", randomFile(t, work, "app", 2<<10), "--name", "app", "--version", "3.0.0", "--channel", "staging",
		"--depends-on", lib))
	if out := s.mustCustody("admit", "app@3.0.0", "--env", "staging"); !strings.Contains(out, "ALLOW") {
		t.Fatalf("admit app: %s", out)
	}

	// audit: the publication and the admission, in log order, verified.
	var rep struct {
		Digest           string `json:"digest"`
		TrustRootVersion int64  `json:"trust_root_version"`
		Events           []struct {
			Index    int64  `json:"index"`
			Type     string `json:"type"`
			Actor    string `json:"actor"`
			Time     string `json:"time"`
			TreeSize uint64 `json:"tree_size"`
			Subject  struct {
				Digest string `json:"digest"`
			} `json:"subject"`
		} `json:"events"`
	}
	// The gatekeeper's admission event returns once sequenced; audit shows
	// it once a co-signed checkpoint covers it.
	var types []string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		mustJSON(t, s.mustCustody("audit", "app@3.0.0", "--json"), &rep)
		if len(rep.Events) > 1 || time.Now().After(deadline) {
			break
		}
	}
	for i, e := range rep.Events {
		types = append(types, e.Type)
		if e.Subject.Digest != app || !strings.HasPrefix(e.Actor, "spiffe://") || e.Time == "" || uint64(e.Index) >= e.TreeSize {
			t.Errorf("event %d: %+v", i, e)
		}
		if i > 0 && e.Index <= rep.Events[i-1].Index {
			t.Errorf("events not in log order: %+v", rep.Events)
		}
	}
	if rep.Digest != app || rep.TrustRootVersion < 1 || !slices.Contains(types, "artifact.published") || !slices.Contains(types, "admission.decided") {
		t.Errorf("audit of app: %+v (types %v)", rep, types)
	}
	if out := s.mustCustody("audit", app); !strings.Contains(out, "artifact.published") || !strings.Contains(out, "admission.decided") ||
		!strings.Contains(out, "co-signed by the log key of trust root") {
		t.Errorf("audit by digest:\n%s", out)
	}
	if out, code := s.custody("audit", "nosuch@1.0.0"); code == 0 {
		t.Errorf("audit of an unknown artifact succeeded:\n%s", out)
	}

	// lineage up from app: lib at depth 1, base at depth 2, base's source.
	var lin struct {
		Edges []struct {
			ArtifactDigest string `json:"artifact_digest"`
			Dependency     string `json:"dependency"`
			Depth          int    `json:"depth"`
		} `json:"edges"`
		Truncated bool `json:"truncated"`
	}
	mustJSON(t, s.mustCustody("lineage", "app@3.0.0", "--up", "--json"), &lin)
	var edges []string
	for _, e := range lin.Edges {
		edges = append(edges, e.ArtifactDigest[:12]+">"+e.Dependency[:min(len(e.Dependency), 16)]+"@"+string(rune('0'+e.Depth)))
	}
	for _, want := range []string{app[:12] + ">" + lib[:16] + "@1", lib[:12] + ">" + base[:16] + "@2", base[:12] + ">gitCommit:012345@3",
		base[:12] + ">" + ("sha256:" + image)[:16] + "@3"} {
		if !slices.Contains(edges, want) {
			t.Errorf("lineage up from app lacks %s: %v", want, edges)
		}
	}
	if out := s.mustCustody("lineage", base, "--down"); !strings.Contains(out, "└── lib@2.0.0") || !strings.Contains(out, "    └── app@3.0.0") {
		t.Errorf("lineage down from base:\n%s", out)
	}
	var path struct {
		Found    bool `json:"found"`
		Downward bool `json:"downward"`
		Edges    []any
	}
	mustJSON(t, s.mustCustody("lineage", "base@1.0.0", "--path", "app@3.0.0", "--json"), &path)
	if !path.Found || !path.Downward || len(path.Edges) != 2 {
		t.Errorf("path base → app: %+v", path)
	}

	// search by each kind of filter.
	type page struct {
		Artifacts []struct {
			Name  string `json:"name"`
			KeyID string `json:"key_id"`
		} `json:"artifacts"`
		NextPageToken string `json:"next_page_token"`
	}
	names := func(args ...string) ([]string, page) {
		var p page
		mustJSON(t, s.mustCustody(append([]string{"search", "--json"}, args...)...), &p)
		var n []string
		for _, a := range p.Artifacts {
			n = append(n, a.Name)
		}
		return n, p
	}
	if n, p := names("--name", "lib"); !slices.Equal(n, []string{"lib"}) || p.Artifacts[0].KeyID == "" {
		t.Errorf("search --name lib: %v", p)
	}
	if n, _ := names("--digest", app); !slices.Equal(n, []string{"app"}) {
		t.Errorf("search --digest: %v", n)
	}
	if n, _ := names("--source-repo", "https://git.example/base", "--commit", commit); !slices.Equal(n, []string{"base"}) {
		t.Errorf("search by source: %v", n)
	}
	if n, _ := names("--channel", "staging", "--key-version", "artifact@1"); !slices.Equal(n, []string{"base", "lib", "app"}) {
		t.Errorf("search by channel and key version: %v", n)
	}
	if n, _ := names("--channel", "prod"); len(n) != 0 {
		t.Errorf("search --channel prod: %v", n)
	}
	n, p := names("--limit", "2")
	if !slices.Equal(n, []string{"base", "lib"}) || p.NextPageToken == "" {
		t.Fatalf("first page of 2: %v %q", n, p.NextPageToken)
	}
	if n, p := names("--limit", "2", "--page-token", p.NextPageToken); !slices.Equal(n, []string{"app"}) || p.NextPageToken != "" {
		t.Errorf("second page: %v %q", n, p.NextPageToken)
	}
	if out, code := s.custody("search", "--name", "x' OR '1'='1"); code == 0 || !strings.Contains(out, "InvalidArgument") {
		t.Errorf("hostile search: exit %d\n%s", code, out)
	}

	// inventory: all three verified, with key version and provenance.
	var inv struct {
		Unverified int `json:"unverified"`
		Artifacts  []struct {
			Artifact struct {
				Name string `json:"name"`
			} `json:"artifact"`
			Verified bool `json:"verified"`
			Key      struct {
				Name    string `json:"name"`
				Version int    `json:"version"`
			} `json:"key"`
			Provenance struct {
				BuilderID    string `json:"builder_id"`
				SourceRepo   string `json:"source_repo"`
				SourceCommit string `json:"source_commit"`
				Dependencies int    `json:"dependencies"`
			} `json:"provenance"`
			LogIndex int64 `json:"log_index"`
		} `json:"artifacts"`
	}
	mustJSON(t, s.mustCustody("inventory", "--json"), &inv)
	if inv.Unverified != 0 || len(inv.Artifacts) != 3 {
		t.Fatalf("inventory: %+v", inv)
	}
	for _, it := range inv.Artifacts {
		if !it.Verified || it.Key.Name == "" || it.Key.Version < 1 || !strings.HasPrefix(it.Provenance.BuilderID, "spiffe://") || it.LogIndex < 0 {
			t.Errorf("inventory item: %+v", it)
		}
	}
	if b := inv.Artifacts[0]; b.Artifact.Name != "base" || b.Provenance.SourceRepo != "https://git.example/base" || b.Provenance.SourceCommit != commit {
		t.Errorf("base's provenance: %+v", b)
	}
	if a := inv.Artifacts[2]; a.Artifact.Name != "app" || a.Provenance.Dependencies != 1 {
		t.Errorf("app's provenance: %+v", a)
	}
	if out := s.mustCustody("inventory"); !strings.Contains(out, "3 artifacts, 3 verified") {
		t.Errorf("inventory:\n%s", out)
	}
}

func mustJSON(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("not JSON (%v):\n%s", err, out)
	}
}
