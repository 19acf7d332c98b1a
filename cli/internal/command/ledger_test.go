package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/verify"
)

// hostileCatalog answers ListEvents, SearchArtifacts and GetArtifact with
// whatever the test sets; other methods are not called.
type hostileCatalog struct {
	catalogv1.CatalogServiceClient
	pages    []*catalogv1.ListEventsResponse
	search   []*catalogv1.SearchArtifactsResponse
	artifact map[string]*catalogv1.GetArtifactResponse
	calls    int
}

func (h *hostileCatalog) ListEvents(_ context.Context, req *catalogv1.ListEventsRequest, _ ...grpc.CallOption) (*catalogv1.ListEventsResponse, error) {
	i := 0
	if req.GetPageToken() != "" {
		fmt.Sscanf(req.GetPageToken(), "p%d", &i)
	}
	if h.calls++; h.calls > 10 {
		return nil, errors.New("looped")
	}
	return h.pages[i], nil
}

func (h *hostileCatalog) SearchArtifacts(_ context.Context, req *catalogv1.SearchArtifactsRequest, _ ...grpc.CallOption) (*catalogv1.SearchArtifactsResponse, error) {
	i := 0
	if req.GetPageToken() != "" {
		fmt.Sscanf(req.GetPageToken(), "p%d", &i)
	}
	if h.calls++; h.calls > 10 {
		return nil, errors.New("looped")
	}
	return h.search[i], nil
}

func (h *hostileCatalog) GetArtifact(_ context.Context, req *catalogv1.GetArtifactRequest, _ ...grpc.CallOption) (*catalogv1.GetArtifactResponse, error) {
	if r, ok := h.artifact[req.GetName()+"@"+req.GetVersion()]; ok {
		return r, nil
	}
	return nil, errors.New("NotFound")
}

var (
	auditDigest = "sha256:" + strings.Repeat("a", 64)
	otherDigest = "sha256:" + strings.Repeat("b", 64)
)

// auditLog is a co-signed log of five entries; entries 1 and 3 are about
// auditDigest, the others about otherDigest.
type auditLog struct {
	log     *fakeLog
	leaves  [][]byte
	entries []*catalogv1.LogEntry
}

func TestAudit(t *testing.T) {
	skey, cskey, root := logWorld(t)
	l := buildAuditLog(t, newFakeLog(t, skey, cskey))
	good := func() *hostileCatalog {
		return &hostileCatalog{pages: []*catalogv1.ListEventsResponse{
			{Entries: []*catalogv1.LogEntry{clone(l.entries[1])}, NextPageToken: "p1"},
			{Entries: []*catalogv1.LogEntry{clone(l.entries[3])}},
		}}
	}
	rep, err := audit(t.Context(), good(), root, auditDigest)
	if err != nil {
		t.Fatalf("audit of a good answer: %v", err)
	}
	var got []string
	for _, e := range rep.Events {
		got = append(got, fmt.Sprintf("%d %s %s %d", e.Index, e.Type, e.Actor, e.TreeSize))
	}
	want := []string{"1 artifact.published spiffe://custody.test/service/x 5", "3 admission.decided spiffe://custody.test/service/x 5"}
	if !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	var out bytes.Buffer
	printAudit(&out, "app@1.0.0", rep)
	for _, s := range []string{"2 events", "#1 ", "#3 ", "admission.decided", "spiffe://custody.test/service/x", "2026-12-02T10:03:00Z", "trust root v3"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("audit output lacks %q:\n%s", s, out.String())
		}
	}

	// Every hostile answer fails the audit, naming the entry.
	tests := map[string]struct {
		mutate func(h *hostileCatalog)
		want   string
	}{
		"proof that does not verify": {func(h *hostileCatalog) {
			h.pages[1].Entries[0].InclusionProof[0] = bytes.Repeat([]byte{7}, 32)
		}, "log entry 3: inclusion proof"},
		"entry about another digest": {func(h *hostileCatalog) {
			h.pages[1].Entries[0] = clone(l.entries[2])
		}, `log entry 2 (artifact.published) is about "` + otherDigest},
		"leaf swapped under a valid proof": {func(h *hostileCatalog) {
			h.pages[1].Entries[0].Leaf = l.entries[1].Leaf
		}, "log entry 3: inclusion proof"},
		"wrong index": {func(h *hostileCatalog) { h.pages[1].Entries[0].Index = 4 }, "log entry 4: inclusion proof"},
		"checkpoint not co-signed by the trust root's key": {func(h *hostileCatalog) {
			other := buildAuditLog(t, newFakeLog(t, skey, mustCosigner(t)))
			h.pages[0].Entries[0] = clone(other.entries[1])
		}, "log entry 1: checkpoint"},
		"no checkpoint":  {func(h *hostileCatalog) { h.pages[0].Entries[0].Checkpoint = nil }, "log entry 1: checkpoint"},
		"malformed leaf": {func(h *hostileCatalog) { h.pages[0].Entries[0].Leaf = []byte(`{"type":1}`) }, "log entry 1: malformed log entry"},
		"repeated entry": {func(h *hostileCatalog) { h.pages[1].Entries[0] = clone(l.entries[1]) }, "log entry 1 comes after entry 1"},
		"empty page that loops": {func(h *hostileCatalog) {
			h.pages[1] = &catalogv1.ListEventsResponse{NextPageToken: "p1"}
		}, "empty page"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			h := good()
			tt.mutate(h)
			_, err := audit(t.Context(), h, root, auditDigest)
			var ee *exitError
			if err == nil || !errors.As(err, &ee) || ee.code != ExitDenied || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an exit-1 error mentioning %q", err, tt.want)
			}
		})
	}
}

func mustCosigner(t *testing.T) string {
	t.Helper()
	cskey, _, err := tlog.GenerateCosignerKey("custody.test/signer")
	if err != nil {
		t.Fatal(err)
	}
	return cskey
}

func clone(e *catalogv1.LogEntry) *catalogv1.LogEntry {
	return &catalogv1.LogEntry{Index: e.Index, Leaf: slices.Clone(e.Leaf), Checkpoint: slices.Clone(e.Checkpoint), InclusionProof: slices.Clone(e.InclusionProof)}
}

// buildAuditLog fills fl with five entries: 1 and 3 about auditDigest.
func buildAuditLog(t *testing.T, fl *fakeLog) *auditLog {
	t.Helper()
	l := &auditLog{log: fl}
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	types := []string{tlog.TypeArtifactPublished, tlog.TypeArtifactPublished, tlog.TypeArtifactPublished, tlog.TypeAdmissionDecided, tlog.TypeAdmissionDecided}
	for i, typ := range types {
		d := otherDigest
		if i == 1 || i == 3 {
			d = auditDigest
		}
		leaf, err := tlog.Entry{Type: typ, Time: at.Add(time.Duration(i) * time.Minute), Actor: "spiffe://custody.test/service/x",
			Subject: tlog.Subject{Name: "app", Version: "1.0.0", Digest: d}, Details: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		l.leaves = append(l.leaves, leaf)
		fl.tree.AppendData(leaf)
	}
	cp, err := fl.Checkpoint(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for i, leaf := range l.leaves {
		proof, err := fl.tree.InclusionProof(uint64(i), fl.tree.Size())
		if err != nil {
			t.Fatal(err)
		}
		l.entries = append(l.entries, &catalogv1.LogEntry{Index: int64(i), Leaf: leaf, InclusionProof: proof, Checkpoint: cp})
	}
	return l
}

// TestJSONFieldNames pins the documented --json field names
// (docs/cli-json.md): renaming one breaks this test.
func TestJSONFieldNames(t *testing.T) {
	keys := func(v any) []string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var out []string
		for k := range m {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	tests := []struct {
		v    any
		want string
	}{
		{jsonAudit{}, "digest events trust_root_version"},
		{jsonEvent{EnvelopeSHA256: "x", Details: json.RawMessage(`{}`)}, "actor details envelope_sha256 index subject time tree_size type"},
		{jsonSubject{Name: "a", Version: "1"}, "digest name version"},
		{jsonArtifact{KeyID: "k"}, "builder_id channel created_at digest key_id name size source_commit source_repo version"},
		{jsonDeployment{}, "deployed_at digest environment name version"},
		{jsonSearch{}, "artifacts deployments next_page_token"},
		{jsonInventory{}, "artifacts trust_root_version unverified"},
		{jsonInventoryItem{Problem: "p", Key: &jsonKey{}, Provenance: &jsonProvenance{}}, "artifact deployments key log_index problem provenance verified"},
		{jsonKey{}, "id name status version"},
		{jsonProvenance{}, "builder_id dependencies source_commit source_repo"},
		{jsonLineage{}, "artifacts deployments direction edges node truncated"},
		{jsonEdge{URI: "u", Name: "n", DigestSet: map[string]string{"a": "b"}, Annotations: map[string]string{"a": "b"}}, "annotations artifact_digest artifact_name artifact_version dependency depth digest name uri"},
		{jsonLineagePath{}, "downward edges found from to"},
		{jsonSBOM{}, "attached_at attached_by components digest document_digest format key_id log_index name version"},
		{jsonComponent{}, "license name purl version"},
		{jsonAdmission{Digest: "d", DecisionFile: "f"}, "decision decision_file decision_id digest dry_run environment input_attestations log_index policy_digest policy_revision real_decision reasons ref signed"},
	}
	for _, tt := range tests {
		if got := strings.Join(keys(tt.v), " "); got != tt.want {
			t.Errorf("%T: fields %q, want %q", tt.v, got, tt.want)
		}
	}
}

func TestSearchRendering(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC))
	resp := &catalogv1.SearchArtifactsResponse{
		Artifacts: []*catalogv1.ListedArtifact{
			{Artifact: &catalogv1.Artifact{Name: "app", Version: "1.0.0", Digest: auditDigest, Channel: "prod", BuilderId: "spiffe://td/builder/ci", SourceRepo: "https://git/app", SourceCommit: "abc", CreatedAt: at}, KeyId: "k1"},
			{Artifact: &catalogv1.Artifact{Name: "lib", Version: "2.0.0", Digest: otherDigest, BuilderId: "spiffe://td/builder/ci"}},
		},
		Deployments:   []*catalogv1.Deployment{{Digest: auditDigest, Name: "app", Version: "1.0.0", Environment: "prod", DeployedAt: at}, {Digest: auditDigest, Environment: "prod"}, {Digest: auditDigest, Environment: "staging"}},
		NextPageToken: "tok",
	}
	out := searchJSON(resp)
	b, _ := json.Marshal(out)
	for _, s := range []string{`"created_at":"2026-12-02T10:00:00Z"`, `"key_id":"k1"`, `"next_page_token":"tok"`, `"environment":"staging"`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("search JSON lacks %s: %s", s, b)
		}
	}
	var w bytes.Buffer
	printSearch(&w, out)
	want := "app@1.0.0  " + auditDigest + "  channel prod  key k1  built by spiffe://td/builder/ci from https://git/app@abc  deployed to prod, staging\n" +
		"lib@2.0.0  " + otherDigest + "  channel -  key -  built by spiffe://td/builder/ci\n" +
		"2 artifacts; more with --page-token tok\n"
	if w.String() != want {
		t.Errorf("search output:\n%s\nwant:\n%s", w.String(), want)
	}
	// An empty page prints empty lists, not null.
	b, _ = json.Marshal(searchJSON(&catalogv1.SearchArtifactsResponse{}))
	if string(b) != `{"artifacts":[],"deployments":[],"next_page_token":""}` {
		t.Errorf("empty search JSON: %s", b)
	}
}

func TestLineageTree(t *testing.T) {
	app, lib, base := "sha256:"+strings.Repeat("1", 64), "sha256:"+strings.Repeat("2", 64), "sha256:"+strings.Repeat("3", 64)
	commit := "gitCommit:" + strings.Repeat("c", 40)
	edges := []*catalogv1.LineageEdge{
		{ArtifactDigest: app, ArtifactName: "app", ArtifactVersion: "1.0.0", Dependency: lib, Depth: 1},
		{ArtifactDigest: app, ArtifactName: "app", ArtifactVersion: "1.0.0", Dependency: commit, Uri: "git+https://git/app", Depth: 1},
		{ArtifactDigest: lib, ArtifactName: "lib", ArtifactVersion: "2.0.0", Dependency: base, Depth: 2},
		{ArtifactDigest: app, ArtifactName: "app", ArtifactVersion: "1.0.0", Dependency: base, Depth: 1},
	}
	var w bytes.Buffer
	printTree(&w, lineageJSON(app, false, &catalogv1.GetLineageResponse{Edges: edges,
		Artifacts: []*catalogv1.Artifact{{Name: "base", Version: "9", Digest: base}}}))
	// Children in node order; a node reached twice is drawn once.
	want := `app@1.0.0 (sha256:111111111111…)
├── git+https://git/app (gitCommit:cccccccccccc…)
├── lib@2.0.0 (sha256:222222222222…)
│   └── base@9 (sha256:333333333333…)
└── base@9 (sha256:333333333333…) (shown above)
`
	if w.String() != want {
		t.Errorf("up tree:\n%s\nwant:\n%s", w.String(), want)
	}

	// Down, with deployments and a claimed cycle.
	at := timestamppb.New(time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC))
	down := []*catalogv1.LineageEdge{
		{ArtifactDigest: lib, ArtifactName: "lib", ArtifactVersion: "2.0.0", Dependency: base, Depth: 1},
		{ArtifactDigest: app, ArtifactName: "app", ArtifactVersion: "1.0.0", Dependency: lib, Depth: 2},
		{ArtifactDigest: base, ArtifactName: "base", ArtifactVersion: "9", Dependency: app, Depth: 3},
	}
	w.Reset()
	printTree(&w, lineageJSON(base, true, &catalogv1.GetLineageResponse{Edges: down, Truncated: true,
		Deployments: []*catalogv1.Deployment{{Digest: app, Environment: "prod", DeployedAt: at}}}))
	want = `base@9 (sha256:333333333333…)
└── lib@2.0.0 (sha256:222222222222…)
    └── app@1.0.0 (sha256:111111111111…)
        ├── deployed to prod at 2026-12-02T10:00:00Z
        └── base@9 (sha256:333333333333…) (cycle: claimed to be built from itself)
(cut short: more descendants than the walk's bounds; use --depth or start lower)
`
	if w.String() != want {
		t.Errorf("down tree:\n%s\nwant:\n%s", w.String(), want)
	}

	w.Reset()
	printTree(&w, lineageJSON(base, false, &catalogv1.GetLineageResponse{}))
	if w.String() != "sha256:333333333333…\nno ancestors recorded\n" {
		t.Errorf("empty tree: %q", w.String())
	}

	w.Reset()
	printPath(&w, pathJSON(base, app, &catalogv1.GetLineagePathResponse{Edges: down[:2], Downward: true}))
	// The path's edges name only their artifacts.
	want = "sha256:333333333333…\n  ↓ built into\nlib@2.0.0 (sha256:222222222222…)\n  ↓ built into\napp@1.0.0 (sha256:111111111111…)\n"
	if w.String() != want {
		t.Errorf("path:\n%s", w.String())
	}
}

func TestIsNameVersion(t *testing.T) {
	for ref, want := range map[string]bool{
		"app@1.0.0": true, "sha256:" + strings.Repeat("a", 64): false, "gitCommit:abc": false,
		"uri:https://x@y/z": false, "": false, "org/app@1": true,
	} {
		if got := isNameVersion(ref); got != want {
			t.Errorf("isNameVersion(%q) = %v, want %v", ref, got, want)
		}
	}
}

func TestInventory(t *testing.T) {
	w := newVerifyWorld(t)
	root := w.roots[0]
	a := w.ev.Artifact
	good := &catalogv1.GetArtifactResponse{
		Artifact: &catalogv1.Artifact{Name: a.Name, Version: a.Version, Digest: a.Digest, Size: a.Size, Channel: a.Channel, BuilderId: a.BuilderID},
		Envelope: w.ev.Envelope,
		Entry:    &catalogv1.LogEntry{Index: w.ev.Entry.Index, Leaf: w.ev.Entry.Leaf, InclusionProof: w.ev.Entry.InclusionProof, Checkpoint: w.ev.Entry.Checkpoint},
	}
	keyID := root.SigningKeys[0].ID
	listed := func(name, version, digest, key string) *catalogv1.ListedArtifact {
		return &catalogv1.ListedArtifact{Artifact: &catalogv1.Artifact{Name: name, Version: version, Digest: digest}, KeyId: key}
	}
	// The second artifact's evidence is app@1.0.0's: the catalog answers
	// another artifact's good evidence for it.
	h := &hostileCatalog{
		search: []*catalogv1.SearchArtifactsResponse{
			{Artifacts: []*catalogv1.ListedArtifact{listed(a.Name, a.Version, a.Digest, keyID)}, NextPageToken: "p1",
				Deployments: []*catalogv1.Deployment{{Digest: a.Digest, Name: a.Name, Version: a.Version, Environment: "prod"}}},
			{Artifacts: []*catalogv1.ListedArtifact{listed("evil", "1.0.0", otherDigest, keyID), listed("gone", "1.0.0", otherDigest, "")}},
		},
		artifact: map[string]*catalogv1.GetArtifactResponse{"app@1.0.0": good, "evil@1.0.0": good},
	}
	inv, err := inventory(t.Context(), h, root, &catalogv1.SearchArtifactsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Artifacts) != 3 || inv.Unverified != 2 {
		t.Fatalf("inventory %+v: want 3 artifacts, 2 unverified", inv)
	}
	ok := inv.Artifacts[0]
	if !ok.Verified || ok.Key == nil || ok.Key.ID != keyID || ok.Key.Name != "artifact" || ok.Key.Version != 1 ||
		ok.Provenance.BuilderID != a.BuilderID || len(ok.Deployments) != 1 || ok.Deployments[0].Environment != "prod" {
		t.Errorf("verified item: %+v", ok)
	}
	if bad := inv.Artifacts[1]; bad.Verified || !strings.Contains(bad.Problem, "catalog returned artifact app@1.0.0 (sha256:") {
		t.Errorf("mixed-up evidence: %+v", bad)
	}
	if bad := inv.Artifacts[2]; bad.Verified || !strings.Contains(bad.Problem, "get the evidence") {
		t.Errorf("missing evidence: %+v", bad)
	}
	var out bytes.Buffer
	printInventory(&out, inv)
	for _, s := range []string{"OK   app@1.0.0", "signed by artifact v1 (" + keyID, "deployed to prod", "FAIL evil@1.0.0", "3 artifacts, 1 verified against trust root v1, 2 failed"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("inventory output lacks %q:\n%s", s, out.String())
		}
	}

	// A tampered envelope, and a catalog that lists another key id.
	tampered := &catalogv1.GetArtifactResponse{Artifact: good.Artifact, Entry: good.Entry,
		Envelope: []byte(strings.Replace(string(good.Envelope), `"sig":"`, `"sig":"AAAA`, 1))}
	h = &hostileCatalog{
		search:   []*catalogv1.SearchArtifactsResponse{{Artifacts: []*catalogv1.ListedArtifact{listed(a.Name, a.Version, a.Digest, "other-key")}}},
		artifact: map[string]*catalogv1.GetArtifactResponse{"app@1.0.0": good},
	}
	if inv, err = inventory(t.Context(), h, root, &catalogv1.SearchArtifactsRequest{}); err != nil || inv.Artifacts[0].Verified ||
		!strings.Contains(inv.Artifacts[0].Problem, "the catalog lists key other-key") {
		t.Errorf("other key id: %v %+v", err, inv)
	}
	h.artifact["app@1.0.0"], h.calls = tampered, 0
	if inv, err = inventory(t.Context(), h, root, &catalogv1.SearchArtifactsRequest{}); err != nil || inv.Artifacts[0].Verified ||
		!strings.Contains(inv.Artifacts[0].Problem, verify.ErrVerification.Error()+" for app@1.0.0") {
		t.Errorf("tampered envelope: %v %+v", err, inv)
	}
}

func TestKeyIDOf(t *testing.T) {
	w := newVerifyWorld(t)
	root := w.roots[0]
	if id, err := keyIDOf(root, "artifact@1"); err != nil || id != root.SigningKeys[0].ID {
		t.Errorf("artifact@1: %q %v", id, err)
	}
	for _, bad := range []string{"artifact@2", "artifact", "@1", "artifact@01", "artifact@x", "artifact@-1"} {
		if _, err := keyIDOf(root, bad); err == nil {
			t.Errorf("keyIDOf(%q): no error", bad)
		}
	}
}

func TestDependencyFlag(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	rd, err := dependencyFlag("lib@1.0.0=" + d)
	if err != nil || rd.GetName() != "lib@1.0.0" || rd.GetDigest()["sha256"] != strings.Repeat("a", 64) || rd.GetAnnotations()["kind"] != "artifact" {
		t.Errorf("named: %v %v", rd, err)
	}
	if rd, err := dependencyFlag(d); err != nil || rd.GetName() != "" {
		t.Errorf("bare digest: %v %v", rd, err)
	}
	for _, bad := range []string{"", "lib", "lib=sha256:abc", "sha256:" + strings.Repeat("A", 64), "x=" + d + "\n"} {
		if _, err := dependencyFlag(bad); err == nil {
			t.Errorf("dependencyFlag(%q): no error", bad)
		}
	}
}
