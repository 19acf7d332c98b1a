package server_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
)

// emitters is DESIGN.md's table "Who may write which event", written out
// here independently of libs/tlog's: one type of each family, and the one
// identity path (or path prefix, ending in "/") that may write it. "" means
// nobody may (deny by default).
var emitters = []struct{ typ, emitter string }{
	{"artifact.uploaded", "/service/publisher"},
	{"artifact.retention-deleted", "/service/publisher"},
	{tlog.TypeArtifactRevoked, "/service/gatekeeper"}, // not the publisher's artifact.*
	{"sbom.updated", "/service/publisher"},            // sbom.attached only through RecordSBOM
	{"signing.completed", "/service/signer"},
	{tlog.TypeApprovalRequested, "/service/signer"},
	{tlog.TypeApprovalApproved, "/service/signer"},
	{tlog.TypeApprovalRejected, "/service/signer"},
	{tlog.TypeApprovalSigned, "/service/signer"},
	{tlog.TypeKeyRotated, "/service/signer"},
	{tlog.TypeKeyRevoked, "/service/signer"},
	{tlog.TypeTrustRootPublished, "/service/signer"},
	{tlog.TypeCheckpointCosignRefused, "/service/signer"},
	{tlog.TypeAdmissionDecided, "/service/gatekeeper"},
	{"deployment.started", "/service/gatekeeper"}, // deployment.recorded only through RecordDeployment
	{"rollback.approved", "/service/gatekeeper"},
	{"pause.on", "/service/gatekeeper"},
	{"killswitch.on", "/service/gatekeeper"},
	{"finding.added", "/service/gatekeeper"},
	// advisories.* is written by security identities and admins through
	// ImportAdvisories only; neither may call AppendEvent (decision 0081).
	{"advisories.updated", ""},
	// vex.* is written by security identities through AddVex only; they
	// may not call AppendEvent, and no service or edge may write it.
	{"vex.added", ""},
	{"vex.withdrawn", ""},
	{"token.issued", "/service/cdn-broker"},
	{"purge.requested", "/service/cdn-broker"},
	{"edge.purged", "/edge/"},
	// No family: nobody, however privileged.
	{"checkpoint.published", ""},
	{"catalog.compacted", ""},
	{"test.happened", ""},
	{"admin.override", ""},
	{"edges.purged", ""},
}

// callers are every kind of identity of the trust domain.
var callers = []string{
	"/service/publisher", "/service/signer", "/service/gatekeeper", "/service/cdn-broker", "/service/catalog",
	"/edge/dev", "/builder/ci", "/deployer/pipeline", "/approver/alice", "/admin/ops", "/auditor/audit",
	"/security/triage",
}

// TestEventAuthorizationMatrix walks every event type × identity through
// the production interceptors (ATTACKS.md #33): only each type's emitter
// gets its event logged, with itself as the actor; everyone else gets
// PermissionDenied naming the type (or the method) and the caller, and
// nothing reaches the log or the store.
func TestEventAuthorizationMatrix(t *testing.T) {
	e := newEnv(t)
	clients := map[string]catalogv1.CatalogServiceClient{}
	for _, p := range callers {
		clients[p] = e.client(t, p)
	}
	var logged, refusedByCatalog int
	for _, ev := range emitters {
		for _, p := range callers {
			allowed := ev.emitter != "" && (p == ev.emitter || strings.HasSuffix(ev.emitter, "/") && strings.HasPrefix(p, ev.emitter))
			id := "spiffe://custody.test" + p
			resp, err := clients[p].AppendEvent(t.Context(), &catalogv1.AppendEventRequest{
				Type: ev.typ, SubjectDigest: digestOf(ev.typ), Details: []byte(`{"claimed_actor":"spiffe://custody.test/service/signer"}`),
				Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED,
			})
			if allowed {
				if err != nil {
					t.Errorf("%s by %s: %v, want it logged", ev.typ, p, err)
					continue
				}
				le, perr := tlog.ParseEntry(resp.GetEntry().GetLeaf())
				if perr != nil || le.Type != ev.typ || le.Actor != id {
					t.Errorf("%s by %s: logged %+v (%v); want the caller as the actor", ev.typ, p, le, perr)
				}
				logged++
				continue
			}
			st := status.Convert(err)
			if st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), id) {
				t.Errorf("%s by %s: got %v, want PermissionDenied naming the caller", ev.typ, p, err)
				continue
			}
			byPolicy := strings.Contains(st.Message(), "AppendEvent denied for")
			if !byPolicy {
				refusedByCatalog++
				if !strings.Contains(st.Message(), ev.typ) {
					t.Errorf("%s by %s: %q does not name the type", ev.typ, p, st.Message())
				}
			}
			// Only services and edges reach the catalog's own check.
			if wantPolicy := !strings.HasPrefix(p, "/service/") && !strings.HasPrefix(p, "/edge/"); byPolicy != wantPolicy {
				t.Errorf("%s by %s: refused by the RPC policy = %v, want %v (%s)", ev.typ, p, byPolicy, wantPolicy, st.Message())
			}
		}
	}
	if logged != 22 {
		t.Errorf("%d events logged, want one per family that AppendEvent may log (22)", logged)
	}

	// Another trust domain, even with a service's path: refused at the
	// handshake, before any RPC.
	other := identitytest.New(t, "other.test")
	conn, err := rpc.Dial(e.addr, e.td.ID("/service/catalog"), other.Source(t, "/service/signer"), telemetry.Discard("client"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_, err = catalogv1.NewCatalogServiceClient(conn).AppendEvent(t.Context(), &catalogv1.AppendEventRequest{Type: tlog.TypeKeyRevoked})
	if err == nil || status.Code(err) == codes.OK {
		t.Errorf("another trust domain: got %v, want the handshake refused", err)
	}

	// Nothing refused reached the log or the store.
	size, err := e.log.Size(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if size != uint64(logged) {
		t.Errorf("log has %d entries, want the %d allowed events", size, logged)
	}
	if n := countEvents(t, e); n != logged {
		t.Errorf("store has %d events, want the %d allowed", n, logged)
	}
	if got := counterSum(t, e.tel, "custody_catalog_entries_refused_total", "reason", "not_emitter") +
		counterSum(t, e.tel, "custody_catalog_entries_refused_total", "reason", "unknown_type"); got != float64(refusedByCatalog) {
		t.Errorf("custody_catalog_entries_refused_total = %v, want %d", got, refusedByCatalog)
	}
	if got := counterSum(t, e.tel, "custody_catalog_entries_refused_total", "reason", "unknown_type"); got != 5*6 {
		t.Errorf("refusals for unknown types = %v, want 5 types × 6 services and edges", got)
	}
}

// TestArtifactEntriesByTheirEmitterOnly: the catalog's own RPCs check the
// same table as AppendEvent, so RecordArtifact by anyone but the publisher
// is refused even if the RPC policy let it through.
func TestArtifactEntriesByTheirEmitterOnly(t *testing.T) {
	e := newEnv(t)
	for _, p := range callers {
		_, err := e.client(t, p).RecordArtifact(t.Context(), recordReq("app", "1.0.0", "x"))
		if p == "/service/publisher" {
			if err != nil {
				t.Errorf("publisher: %v", err)
			}
			continue
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("RecordArtifact by %s: got %v, want PermissionDenied", p, err)
		}
	}
}

// countEvents counts the rows of the store's events table.
// countEvents returns the number of stored events once the store has
// indexed the whole log (events acknowledged once sequenced are stored
// from the log in the background).
func countEvents(t *testing.T, e *env) int {
	t.Helper()
	size, err := e.log.Size(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n, err := e.store.IndexedSize(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if n >= size {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store indexed %d of the log's %d entries within 30s", n, size)
		}
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(e.dir, "catalog.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// counterSum returns the value of a counter with one label set to value.
func counterSum(t *testing.T, tel *telemetry.Telemetry, name, label, value string) float64 {
	t.Helper()
	mfs, err := tel.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
