package storetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// digestN is the digest of the n-th artifact of a lineage graph.
func digestN(n int) string { return fmt.Sprintf("sha256:%064x", n+1) }

// withDeps is a record of app@version with digest and lineage edges.
func withDeps(version, digest string, deps ...catalog.Dependency) *catalog.ArtifactRecord {
	r := record(version, digest)
	r.Entry.Leaf = []byte("leaf-" + version + "-" + digest)
	r.Dependencies = deps
	return r
}

func dep(key string) catalog.Dependency {
	d := catalog.Dependency{Key: key, URI: "oci://x/" + key[len(key)-4:], Annotations: map[string]string{"kind": "artifact"}}
	if strings.HasPrefix(key, "sha256:") {
		d.Digest = map[string]string{"sha256": strings.TrimPrefix(key, "sha256:")}
	}
	return d
}

type edgeKey struct{ From, To string }

func edgeSet(edges []catalog.Edge) []edgeKey {
	var out []edgeKey
	for _, e := range edges {
		out = append(out, edgeKey{e.Artifact.Digest, e.Dependency.Key})
	}
	slices.SortFunc(out, func(a, b edgeKey) int { return strings.Compare(a.From+a.To, b.From+b.To) })
	return out
}

// lineage: a chain 0 ← 1 ← 2 (2 built from 1, from 0), a source commit
// under 0, a pending artifact that claims 2 (unseen until logged), and a
// cycle 3 ↔ 4 that a hostile builder can claim. Edges are stored with the
// artifact, walked both ways, each once, and survive reopening.
func lineage(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	commit := "gitCommit:" + strings.Repeat("3f", 20)
	src := catalog.Dependency{Key: commit, URI: "git+https://git.example/app", Digest: map[string]string{"gitCommit": strings.Repeat("3f", 20)}, Annotations: map[string]string{"kind": "source"}}
	logged(t, s, withDeps("0", digestN(0), src), 0)
	id1 := logged(t, s, withDeps("1", digestN(1), dep(digestN(0))), 1)
	logged(t, s, withDeps("2", digestN(2), dep(digestN(1)), dep("uri:https://ci.example/env")), 2)
	if _, err := s.InsertArtifact(ctx, withDeps("pending", digestN(9), dep(digestN(2)))); err != nil {
		t.Fatal(err)
	}
	logged(t, s, withDeps("3", digestN(3), dep(digestN(4))), 3)
	logged(t, s, withDeps("4", digestN(4), dep(digestN(3))), 4)

	walk := func(node string, dir catalog.Direction, limit int) []catalog.Edge {
		t.Helper()
		edges, err := s.Lineage(ctx, node, dir, limit)
		if err != nil {
			t.Fatalf("Lineage(%s, %v): %v", node, dir, err)
		}
		return edges
	}
	up := walk(digestN(2), catalog.Up, 100)
	want := []edgeKey{{digestN(0), commit}, {digestN(1), digestN(0)}, {digestN(2), digestN(1)}, {digestN(2), "uri:https://ci.example/env"}}
	if diff := cmp.Diff(want, edgeSet(up)); diff != "" {
		t.Errorf("ancestors of 2 (-want +got):\n%s", diff)
	}
	for _, e := range up {
		if e.Artifact.Digest == digestN(1) {
			if e.Artifact.Name != "app" || e.Artifact.Version != "1" || e.Dependency.URI != "oci://x/"+digestN(0)[67:] ||
				e.Dependency.Digest["sha256"] != digestN(0)[7:] || e.Dependency.Annotations["kind"] != "artifact" {
				t.Errorf("edge of app@1: %+v", e)
			}
		}
	}
	down := walk(commit, catalog.Down, 100)
	want = []edgeKey{{digestN(0), commit}, {digestN(1), digestN(0)}, {digestN(2), digestN(1)}}
	if diff := cmp.Diff(want, edgeSet(down)); diff != "" {
		t.Errorf("descendants of the commit, without the pending artifact (-want +got):\n%s", diff)
	}
	if got := walk(digestN(2), catalog.Down, 100); len(got) != 0 {
		t.Errorf("descendants of 2 (only a pending artifact claims it): %+v", got)
	}
	if got := walk(digestN(2), catalog.Up, 2); len(got) != 2 || got[0].Artifact.Digest != digestN(2) || got[1].Artifact.Digest != digestN(2) {
		t.Errorf("the nearest 2 ancestors' edges: %+v", got)
	}
	cycle := walk(digestN(3), catalog.Up, 100)
	if diff := cmp.Diff([]edgeKey{{digestN(3), digestN(4)}, {digestN(4), digestN(3)}}, edgeSet(cycle)); diff != "" {
		t.Errorf("a cycle: each edge once (-want +got):\n%s", diff)
	}
	if got := walk(digestN(7), catalog.Up, 100); len(got) != 0 {
		t.Errorf("ancestors of an unknown node: %+v", got)
	}

	list, err := s.LoggedArtifactsByDigests(ctx, []string{digestN(1), digestN(9), digestN(7)})
	if err != nil || len(list) != 1 || list[0].ID != id1 || list[0].Artifact.Version != "1" {
		t.Errorf("LoggedArtifactsByDigests = %+v, %v; want app@1 only (9 is pending, 7 unknown)", list, err)
	}
	var many []string
	for i := range 1200 {
		many = append(many, digestN(i))
	}
	if list, err := s.LoggedArtifactsByDigests(ctx, many); err != nil || len(list) != 5 {
		t.Errorf("LoggedArtifactsByDigests of 1200 digests: %d, %v; want 5", len(list), err)
	}

	if _, err := s.InsertDeployment(ctx, &catalog.Deployment{ArtifactID: id1, Environment: "prod", Actor: "spiffe://t/service/gatekeeper", DeployedAt: created}); err != nil {
		t.Fatal(err)
	}
	deployed, err := s.DeploymentsOf(ctx, []string{digestN(0), digestN(1)})
	if err != nil || len(deployed) != 1 || deployed[0].Artifact.Version != "1" || deployed[0].Artifact.Digest != digestN(1) ||
		deployed[0].Deployment.Environment != "prod" || !deployed[0].Deployment.DeployedAt.Equal(created) {
		t.Errorf("DeploymentsOf = %+v, %v", deployed, err)
	}
	s.Close()
	s = open(t)
	if got, err := s.Lineage(ctx, digestN(2), catalog.Up, 100); err != nil || len(got) != 4 {
		t.Errorf("after reopening: %d edges, %v", len(got), err)
	}
}

// lineageWide: 1,000 artifacts built from one base; the limit cuts the
// walk and the nearest edges are kept.
func lineageWide(t *testing.T, open Opener) {
	s := open(t)
	base := digestN(0)
	logged(t, s, withDeps("base", base), 0)
	for i := 1; i <= 1000; i++ {
		logged(t, s, withDeps(fmt.Sprint(i), digestN(i), dep(base)), uint64(i))
	}
	logged(t, s, withDeps("top", digestN(5000), dep(digestN(1))), 5000)
	all, err := s.Lineage(t.Context(), base, catalog.Down, 2000)
	if err != nil || len(all) != 1001 {
		t.Fatalf("descendants of the base: %d, %v; want 1001", len(all), err)
	}
	cut, err := s.Lineage(t.Context(), base, catalog.Down, 10)
	if err != nil || len(cut) != 10 {
		t.Fatalf("limited walk: %d, %v", len(cut), err)
	}
	for _, e := range cut {
		if e.Dependency.Key != base {
			t.Errorf("a limited walk skipped nearer edges for %+v", e)
		}
	}
}

// entriesBySubject: publications, re-signatures and events about one
// digest, logged only, in log order, paged by index.
func entriesBySubject(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	a := logged(t, s, record("1.0.0", d1), 10)
	logged(t, s, record("1.0.1", d2), 11)
	logged(t, s, record("1.0.2", d1), 14)
	sid, err := s.InsertSignature(ctx, signature(a, keyB, "resigned"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetLogged(ctx, catalog.Ref{Kind: catalog.KindSignature, ID: sid}, 12, nil, []byte("cp")); err != nil {
		t.Fatal(err)
	}
	event := func(digest, leaf string, index int64) {
		id, err := s.InsertEvent(ctx, &catalog.Event{Type: "admission.decided", Actor: "spiffe://t/service/gatekeeper", SubjectDigest: digest,
			CreatedAt: created, Entry: catalog.Entry{Leaf: []byte(leaf)}})
		if err != nil {
			t.Fatal(err)
		}
		if index >= 0 {
			if err := s.SetLogged(ctx, catalog.Ref{Kind: catalog.KindEvent, ID: id}, uint64(index), [][]byte{make([]byte, 32)}, []byte("cp")); err != nil {
				t.Fatal(err)
			}
		}
	}
	event(d1, "admitted", 13)
	event(d2, "other digest", 15)
	event(d1, "pending", -1)
	event(d1, "late", 16)
	if _, err := s.InsertArtifact(ctx, record("pending", d1)); err != nil {
		t.Fatal(err)
	}

	got, err := s.EntriesBySubject(ctx, d1, -1, 100)
	if err != nil {
		t.Fatal(err)
	}
	var leaves []string
	for _, e := range got {
		leaves = append(leaves, fmt.Sprintf("%d:%s", e.Index, e.Leaf))
		if !e.Logged() || !e.Sequenced {
			t.Errorf("entry %d not logged: %+v", e.Index, e)
		}
	}
	want := []string{"10:leaf-1.0.0", "12:resigned", "13:admitted", "14:leaf-1.0.2", "16:late"}
	if diff := cmp.Diff(want, leaves); diff != "" {
		t.Errorf("entries about d1 (-want +got):\n%s", diff)
	}
	if len(got) > 2 && len(got[2].Proof) != 1 {
		t.Errorf("event proof not read back: %+v", got[2])
	}
	page, err := s.EntriesBySubject(ctx, d1, 12, 2)
	if err != nil || len(page) != 2 || page[0].Index != 13 || page[1].Index != 14 {
		t.Errorf("page after 12: %+v, %v", page, err)
	}
	if none, err := s.EntriesBySubject(ctx, d3, -1, 10); err != nil || len(none) != 0 {
		t.Errorf("entries about an unknown digest: %+v, %v", none, err)
	}

	// EventsOfType: only logged events of that type about that digest.
	typed := func(digest, typ, leaf string, index int64) {
		id, err := s.InsertEvent(ctx, &catalog.Event{Type: typ, Actor: "spiffe://t/security/triage", SubjectDigest: digest,
			CreatedAt: created, Entry: catalog.Entry{Leaf: []byte(leaf)}})
		if err != nil {
			t.Fatal(err)
		}
		if index >= 0 {
			if err := s.SetLogged(ctx, catalog.Ref{Kind: catalog.KindEvent, ID: id}, uint64(index), [][]byte{make([]byte, 32)}, []byte("cp")); err != nil {
				t.Fatal(err)
			}
		}
	}
	typed(d1, "vex.added", "vex-1", 17)
	typed(d2, "vex.added", "vex-other", 18)
	typed(d1, "vex.added", "vex-pending", -1)
	typed(d1, "vex.added", "vex-2", 19)
	vexes, err := s.EventsOfType(ctx, d1, "vex.added", 10)
	if err != nil {
		t.Fatal(err)
	}
	leaves = nil
	for _, e := range vexes {
		leaves = append(leaves, fmt.Sprintf("%d:%s", e.Index, e.Leaf))
	}
	if diff := cmp.Diff([]string{"17:vex-1", "19:vex-2"}, leaves); diff != "" {
		t.Errorf("vex.added events about d1 (-want +got):\n%s", diff)
	}
	if one, err := s.EventsOfType(ctx, d1, "vex.added", 1); err != nil || len(one) != 1 || one[0].Index != 17 {
		t.Errorf("limit 1: %+v, %v", one, err)
	}
	if adm, err := s.EventsOfType(ctx, d1, "admission.decided", 10); err != nil || len(adm) != 2 {
		t.Errorf("admission.decided events about d1: %d, %v; want 2", len(adm), err)
	}
}
