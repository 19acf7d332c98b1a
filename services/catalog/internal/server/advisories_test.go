package server_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/advisory"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/server"
)

// osvDocs reads libs/advisory's real OSV entries.
func osvDocs(t *testing.T) [][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("..", "..", "..", "..", "libs", "advisory", "testdata", "osv", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no OSV testdata: %v", err)
	}
	var docs [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	return docs
}

// importDocs streams docs in batches of two.
func importDocs(t *testing.T, c catalogv1.CatalogServiceClient, docs [][]byte) (*catalogv1.ImportAdvisoriesResponse, error) {
	t.Helper()
	s, err := c.ImportAdvisories(t.Context())
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(docs); i += 2 {
		if err := s.Send(&catalogv1.ImportAdvisoriesRequest{Documents: docs[i:min(i+2, len(docs))]}); err != nil {
			break // the status comes with CloseAndRecv
		}
	}
	return s.CloseAndRecv()
}

// TestImportAdvisories: a security identity's import is logged once as an
// advisories.imported entry about the set's digest, naming every id; the
// same set again logs nothing; a changed document is an update; the
// stored documents are served as imported.
func TestImportAdvisories(t *testing.T) {
	e := newEnv(t)
	docs := osvDocs(t)
	sec := e.client(t, "/security/osv-sync")
	resp, err := importDocs(t, sec, docs)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetCreated() || resp.GetCount() != uint32(len(docs)) || resp.GetAdded() != uint32(len(docs)) || resp.GetUpdated() != 0 {
		t.Fatalf("first import: %v", resp)
	}
	le, err := tlog.ParseEntry(resp.GetEntry().GetLeaf())
	if err != nil {
		t.Fatal(err)
	}
	if le.Type != tlog.TypeAdvisoriesImported || le.Actor != "spiffe://custody.test/security/osv-sync" || le.Subject.Digest != resp.GetSetDigest() {
		t.Errorf("entry %+v: want advisories.imported by the importer about the set digest %s", le, resp.GetSetDigest())
	}
	var details struct {
		Digest string   `json:"digest"`
		Count  int      `json:"count"`
		IDs    []string `json:"ids"`
	}
	if err := json.Unmarshal(le.Details, &details); err != nil {
		t.Fatal(err)
	}
	var want []advisory.Entry
	for _, d := range docs {
		a, err := advisory.Parse(d)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, advisory.Entry{ID: a.ID, Digest: a.Digest})
	}
	if details.Digest != advisory.SetDigest(want) || details.Count != len(docs) || len(details.IDs) != len(docs) ||
		!strings.Contains(strings.Join(details.IDs, " "), "GHSA-jfh8-c2jp-5v3q") {
		t.Errorf("details %+v: want the set digest %s, count %d and every id", details, advisory.SetDigest(want), len(docs))
	}

	// The same set again, in another order, from an admin: nothing new.
	rev := append([][]byte(nil), docs...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	again, err := importDocs(t, e.client(t, "/admin/ops"), rev)
	if err != nil {
		t.Fatal(err)
	}
	if again.GetCreated() || again.GetEntry().GetIndex() != resp.GetEntry().GetIndex() || again.GetSetDigest() != resp.GetSetDigest() {
		t.Errorf("re-import: %v; want the first import (index %d), not created", again, resp.GetEntry().GetIndex())
	}

	// One document changed: another set, one update, the rest unchanged.
	changed := append([][]byte(nil), docs...)
	changed[0] = []byte(strings.Replace(string(docs[0]), `"id"`, ` "id"`, 1))
	upd, err := importDocs(t, e.client(t, "/admin/ops"), changed)
	if err != nil {
		t.Fatal(err)
	}
	if !upd.GetCreated() || upd.GetUpdated() != 1 || upd.GetUnchanged() != uint32(len(docs)-1) || upd.GetEntry().GetIndex() <= resp.GetEntry().GetIndex() {
		t.Errorf("changed import: %v; want one update", upd)
	}

	// Counted: two sets created, one unchanged; every advisory added, one updated.
	if c, u := counterSum(t, e.tel, "custody_catalog_advisory_imports_total", "result", "created"),
		counterSum(t, e.tel, "custody_catalog_advisory_imports_total", "result", "unchanged"); c != 2 || u != 1 {
		t.Errorf("custody_catalog_advisory_imports_total: created %v, unchanged %v; want 2 and 1", c, u)
	}
	mfs, err := e.tel.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	imported := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "custody_catalog_advisories_imported_total" {
			imported = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if imported != float64(len(docs)+1) {
		t.Errorf("custody_catalog_advisories_imported_total = %v, want %d", imported, len(docs)+1)
	}

	// Anyone in the trust domain reads an advisory as imported.
	ga, err := e.client(t, "/deployer/prod").GetAdvisory(t.Context(), &catalogv1.GetAdvisoryRequest{Id: "GHSA-jfh8-c2jp-5v3q"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := advisory.Parse(ga.GetDocument())
	if err != nil || a.ID != "GHSA-jfh8-c2jp-5v3q" || ga.GetDigest() != a.Digest || ga.GetSeverity() != "CRITICAL" {
		t.Errorf("GetAdvisory: %v, %v", ga, err)
	}
	if _, err := sec.GetAdvisory(t.Context(), &catalogv1.GetAdvisoryRequest{Id: "GHSA-none-none-none"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetAdvisory of an unknown id: %v, want NotFound", err)
	}
	if _, err := sec.GetAdvisory(t.Context(), &catalogv1.GetAdvisoryRequest{Id: "../x"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetAdvisory of a bad id: %v, want InvalidArgument", err)
	}
}

// TestImportAdvisoriesRefuses: callers that are neither security
// identities nor admins are refused before anything is read, bad sets are
// refused whole, and the entry type cannot be appended by hand.
func TestImportAdvisoriesRefuses(t *testing.T) {
	e := newEnv(t)
	docs := osvDocs(t)
	for _, path := range []string{"/deployer/prod", "/builder/ci", "/approver/a", "/auditor/audit", "/service/gatekeeper", "/service/publisher", "/edge/dev", "/security"} {
		if _, err := importDocs(t, e.client(t, path), docs); status.Code(err) != codes.PermissionDenied {
			t.Errorf("import by %s: %v, want PermissionDenied", path, err)
		}
	}
	sec := e.client(t, "/security/osv-sync")
	bad := append([][]byte(nil), docs...)
	bad = append(bad, []byte(`{"id":"X-1"}`))
	for name, set := range map[string][][]byte{
		"a document without modified": bad,
		"an id twice":                 append(append([][]byte(nil), docs...), docs[0]),
		"nothing":                     nil,
		"not json":                    {[]byte("{")},
	} {
		if _, err := importDocs(t, sec, set); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if _, err := sec.GetAdvisory(t.Context(), &catalogv1.GetAdvisoryRequest{Id: "GHSA-jfh8-c2jp-5v3q"}); status.Code(err) != codes.NotFound {
		t.Errorf("after refused imports: %v, want NotFound (nothing stored)", err)
	}
	// Nothing was logged: the log holds no entry at all.
	cp, err := sec.GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := tlog.OpenCheckpoint(cp.GetCheckpoint(), e.vkey); err != nil || c.Size != 0 {
		t.Errorf("checkpoint after refused imports: %+v, %v; want an empty log", c, err)
	}
	// A service may not log an import without its rows.
	_, err = e.client(t, "/service/gatekeeper").AppendEvent(t.Context(), &catalogv1.AppendEventRequest{Type: tlog.TypeAdvisoriesImported, Details: []byte(`{}`)})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("AppendEvent advisories.imported: %v, want InvalidArgument", err)
	}
}

// TestImportAdvisoriesOneAtATime: while one import is being received a
// second is refused (Unavailable) before its set is read; a sender slower
// than the receive limit is cut off and the next import goes through.
func TestImportAdvisoriesOneAtATime(t *testing.T) {
	e := newEnv(t)
	e.opts = []server.Option{server.WithImportReceive(500 * time.Millisecond)}
	e.restart(t)
	docs := osvDocs(t)
	slow, err := e.client(t, "/security/slow").ImportAdvisories(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := slow.Send(&catalogv1.ImportAdvisoriesRequest{Documents: docs[:1]}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the first stream holds the import
	if _, err := importDocs(t, e.client(t, "/admin/ops"), docs); status.Code(err) != codes.Unavailable {
		t.Errorf("a second import meanwhile: %v, want Unavailable", err)
	}
	time.Sleep(600 * time.Millisecond)
	if _, err := slow.CloseAndRecv(); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("a sender slower than the limit: %v, want DeadlineExceeded", err)
	}
	if resp, err := importDocs(t, e.client(t, "/admin/ops"), docs); err != nil || !resp.GetCreated() {
		t.Errorf("an import after the slow one: %v, %v", resp, err)
	}
}

// TestImportAdvisoriesManyIDs: an import of more ids than one log entry
// can list logs as many as fit, counts the rest, and stays one entry.
func TestImportAdvisoriesManyIDs(t *testing.T) {
	e := newEnv(t)
	var docs [][]byte
	for i := range 3000 {
		docs = append(docs, fmt.Appendf(nil, `{"id":"GHSA-%04d-aaaa-bbbb","modified":"2024-01-01T00:00:00Z"}`, i))
	}
	resp, err := importDocs(t, e.client(t, "/security/osv-sync"), docs)
	if err != nil {
		t.Fatal(err)
	}
	le, err := tlog.ParseEntry(resp.GetEntry().GetLeaf())
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Count      int      `json:"count"`
		IDs        []string `json:"ids"`
		IDsOmitted int      `json:"ids_omitted"`
	}
	if err := json.Unmarshal(le.Details, &d); err != nil {
		t.Fatal(err)
	}
	if d.Count != 3000 || len(d.IDs) == 0 || d.IDsOmitted == 0 || len(d.IDs)+d.IDsOmitted != 3000 || len(resp.GetEntry().GetLeaf()) > tlog.MaxEntrySize {
		t.Errorf("count %d, %d ids listed, %d omitted, leaf %d bytes", d.Count, len(d.IDs), d.IDsOmitted, len(resp.GetEntry().GetLeaf()))
	}
}
