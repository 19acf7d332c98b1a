package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/server"
	"github.com/custody-dev/custody/services/catalog/internal/store/sqlite"
	"github.com/custody-dev/custody/services/catalog/internal/translog"
)

const origin = "custody.test/log"

// env is a catalog served over SPIFFE mTLS with the production
// interceptors, on a data directory that outlives restarts.
type env struct {
	td   *identitytest.TrustDomain
	dir  string
	skey string
	vkey string

	addr  string
	log   *translog.Log
	store *sqlite.Store
	tel   *telemetry.Telemetry
	stop  func()
	// opts are added to the server's options at the next start.
	opts []server.Option
}

func newEnv(t testing.TB) *env {
	t.Helper()
	skey, vkey, err := tlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{td: identitytest.New(t, "custody.test"), dir: t.TempDir(), skey: skey, vkey: vkey}
	e.start(t)
	t.Cleanup(func() {
		if e.stop != nil {
			e.stop()
		}
	})
	return e
}

// start runs the catalog on e.dir the way run does, minus flags.
func (e *env) start(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(e.dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	tl, err := translog.Open(ctx, translog.Config{Dir: filepath.Join(e.dir, "log"), SignerKey: e.skey})
	if err != nil {
		t.Fatal(err)
	}
	tel := telemetry.Discard("catalog")
	cat := catalog.New(catalog.Config{Store: store, Log: tl, VerifierKey: tl.VerifierKey(), TrustDomain: e.td.TD, Registerer: tel.Registry})
	if err := cat.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	srv := rpc.NewServer(rpc.ServerConfig{
		Source: e.td.Source(t, "/service/catalog"), TrustDomain: e.td.TD,
		Policy: server.Policy(e.td.TD), Logger: logger, Telemetry: tel, MaxRecvMsgSize: server.MaxRecvMsgSize,
	})
	catalogv1.RegisterCatalogServiceServer(srv, server.New(cat, logger, tel.Metrics, append([]server.Option{server.WithLedger(catalog.NewLedger(tl))}, e.opts...)...))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	e.addr, e.log, e.store, e.tel = l.Addr().String(), tl, store, tel
	e.stop = func() {
		srv.GracefulStop()
		cat.Close()
		if err := tl.Close(ctx); err != nil {
			t.Errorf("close log: %v", err)
		}
		if err := store.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
		e.stop = nil
	}
}

func (e *env) restart(t *testing.T) {
	t.Helper()
	e.stop()
	e.start(t)
}

func (e *env) client(t testing.TB, path string) catalogv1.CatalogServiceClient {
	t.Helper()
	conn, err := rpc.Dial(e.addr, e.td.ID("/service/catalog"), e.td.Source(t, path), telemetry.Discard("client"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return catalogv1.NewCatalogServiceClient(conn)
}

func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// envelope is a DSSE envelope over a provenance statement about
// name@version with digest, as recordReq records it (the catalog does not
// check signatures).
func envelope(name, version, digest string) []byte {
	statement, err := attest.NewProvenance(attest.Artifact{Name: name, Version: version, Digest: digest, Channel: "stable",
		BuilderID: "spiffe://custody.test/builder/ci", SourceRepo: "https://git.example/app", SourceCommit: "0123abcd"})
	if err != nil {
		panic(err)
	}
	b, err := attest.SignEnvelope(attest.PayloadType, statement, "k1", func([]byte) ([]byte, error) { return []byte("sig"), nil })
	if err != nil {
		panic(err)
	}
	return b
}

func recordReq(name, version, content string) *catalogv1.RecordArtifactRequest {
	return &catalogv1.RecordArtifactRequest{
		Artifact: &catalogv1.Artifact{
			Name: name, Version: version, Digest: digestOf(content), Size: int64(len(content)), Channel: "stable",
			BuilderId: "spiffe://custody.test/builder/ci", SourceRepo: "https://git.example/app", SourceCommit: "0123abcd",
		},
		Envelope: envelope(name, version, digestOf(content)),
	}
}

// checkEntry verifies an entry the way a client does: checkpoint signature,
// inclusion of the leaf, and the leaf's content.
func checkEntry(t *testing.T, vkey string, e *catalogv1.LogEntry) (*tlog.Checkpoint, *tlog.Entry) {
	t.Helper()
	cp, err := tlog.OpenCheckpoint(e.GetCheckpoint(), vkey)
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	if err := tlog.VerifyInclusion(e.GetLeaf(), uint64(e.GetIndex()), e.GetInclusionProof(), cp); err != nil {
		t.Fatalf("inclusion of entry %d: %v", e.GetIndex(), err)
	}
	le, err := tlog.ParseEntry(e.GetLeaf())
	if err != nil {
		t.Fatalf("leaf: %v", err)
	}
	return cp, le
}

func TestRecordThenGetVerifies(t *testing.T) {
	e := newEnv(t)
	pub := e.client(t, "/service/publisher")
	req := recordReq("app", "1.0.0", "bytes of app 1.0.0")
	start := time.Now()
	resp, err := pub.RecordArtifact(t.Context(), req)
	if err != nil {
		t.Fatalf("RecordArtifact: %v", err)
	}
	t.Logf("RecordArtifact took %v", time.Since(start))
	if !resp.GetCreated() {
		t.Error("created = false for a new artifact")
	}
	_, le := checkEntry(t, e.vkey, resp.GetEntry())
	sum := sha256.Sum256(req.GetEnvelope())
	want := &tlog.Entry{
		Type: tlog.TypeArtifactPublished, Time: le.Time, Actor: "spiffe://custody.test/service/publisher",
		Subject:        tlog.Subject{Name: "app", Version: "1.0.0", Digest: req.GetArtifact().GetDigest()},
		EnvelopeSHA256: hex.EncodeToString(sum[:]),
		Details: json.RawMessage(`{"size":18,"channel":"stable","builder_id":"spiffe://custody.test/builder/ci",` +
			`"source_repo":"https://git.example/app","source_commit":"0123abcd"}`),
	}
	if diff := cmp.Diff(want, le); diff != "" {
		t.Errorf("logged entry (-want +got):\n%s", diff)
	}

	// Any member of the trust domain reads, by name@version and by digest.
	reader := e.client(t, "/auditor/audit")
	for _, get := range []*catalogv1.GetArtifactRequest{
		{Name: "app", Version: "1.0.0"},
		{Digest: req.GetArtifact().GetDigest()},
	} {
		got, err := reader.GetArtifact(t.Context(), get)
		if err != nil {
			t.Fatalf("GetArtifact(%v): %v", get, err)
		}
		checkEntry(t, e.vkey, got.GetEntry())
		if diff := cmp.Diff(resp.GetEntry().GetLeaf(), got.GetEntry().GetLeaf()); diff != "" {
			t.Errorf("leaf differs from RecordArtifact's (-want +got):\n%s", diff)
		}
		if string(got.GetEnvelope()) != string(req.GetEnvelope()) {
			t.Error("envelope differs from the recorded one")
		}
		a := got.GetArtifact()
		if a.GetName() != "app" || a.GetDigest() != req.GetArtifact().GetDigest() || a.GetBuilderId() != "spiffe://custody.test/builder/ci" ||
			a.GetCreatedAt().AsTime().IsZero() || a.GetSize() != 18 || a.GetChannel() != "stable" {
			t.Errorf("artifact = %v", a)
		}
	}
	cp, err := reader.GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := tlog.OpenCheckpoint(cp.GetCheckpoint(), e.vkey); err != nil || c.Size < 1 {
		t.Errorf("GetCheckpoint: %v, %v", c, err)
	}
}

func TestRecordIsIdempotentAndImmutable(t *testing.T) {
	e := newEnv(t)
	pub := e.client(t, "/service/publisher")
	first, err := pub.RecordArtifact(t.Context(), recordReq("app", "1.0.0", "v1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := pub.RecordArtifact(t.Context(), recordReq("app", "1.0.0", "v1"))
	if err != nil {
		t.Fatalf("re-record: %v", err)
	}
	if again.GetCreated() {
		t.Error("re-record: created = true, want false")
	}
	if diff := cmp.Diff(first.GetEntry(), again.GetEntry(), cmpProto()); diff != "" {
		t.Errorf("re-record returned another entry (-first +again):\n%s", diff)
	}
	_, err = pub.RecordArtifact(t.Context(), recordReq("app", "1.0.0", "other bytes"))
	if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), digestOf("v1")) {
		t.Errorf("other digest: got %v, want AlreadyExists naming the recorded digest", err)
	}
	cp, err := pub.GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := tlog.OpenCheckpoint(cp.GetCheckpoint(), e.vkey); c.Size != 1 {
		t.Errorf("log size = %d after one record and two retries, want 1", c.Size)
	}
}

func TestAuthorization(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	rec := func(c catalogv1.CatalogServiceClient) error {
		_, err := c.RecordArtifact(ctx, recordReq("app", "1.0.0", "x"))
		return err
	}
	eventOf := func(typ string) func(c catalogv1.CatalogServiceClient) error {
		return func(c catalogv1.CatalogServiceClient) error {
			_, err := c.AppendEvent(ctx, &catalogv1.AppendEventRequest{Type: typ})
			return err
		}
	}
	event := eventOf(tlog.TypeAdmissionDecided)
	getCP := func(c catalogv1.CatalogServiceClient) error {
		_, err := c.GetCheckpoint(ctx, &catalogv1.GetCheckpointRequest{})
		return err
	}
	tests := []struct {
		who    string
		method string
		call   func(catalogv1.CatalogServiceClient) error
		denied bool
	}{
		{"/builder/ci", "RecordArtifact", rec, true},
		{"/builder/ci", "AppendEvent", event, true},
		{"/service/gatekeeper", "RecordArtifact", rec, true},
		{"/admin/ops", "RecordArtifact", rec, true},
		{"/deployer/pipeline", "AppendEvent", event, true},
		{"/service/gatekeeper", "AppendEvent", event, false},
		{"/edge/dev", "AppendEvent", eventOf("edge.purged"), false},
		{"/builder/ci", "GetCheckpoint", getCP, false},
		{"/service/publisher", "RecordArtifact", rec, false},
	}
	for _, tt := range tests {
		t.Run(tt.who+" "+tt.method, func(t *testing.T) {
			err := tt.call(e.client(t, tt.who))
			if !tt.denied {
				if err != nil {
					t.Fatalf("allowed call failed: %v", err)
				}
				return
			}
			want := fmt.Sprintf("/custody.catalog.v1.CatalogService/%s denied for spiffe://custody.test%s", tt.method, tt.who)
			if st := status.Convert(err); st.Code() != codes.PermissionDenied || st.Message() != want {
				t.Errorf("got %v, want PermissionDenied %q", err, want)
			}
		})
	}
}

func TestAppendEvent(t *testing.T) {
	e := newEnv(t)
	gk := e.client(t, "/service/gatekeeper")
	d := digestOf("app")
	resp, err := gk.AppendEvent(t.Context(), &catalogv1.AppendEventRequest{
		Type: "admission.decided", SubjectDigest: d, Details: []byte(`{"env": "prod", "allow": true}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, le := checkEntry(t, e.vkey, resp.GetEntry())
	if le.Type != "admission.decided" || le.Actor != "spiffe://custody.test/service/gatekeeper" || le.Subject.Digest != d ||
		string(le.Details) != `{"env":"prod","allow":true}` {
		t.Errorf("logged event = %+v (details %s)", le, le.Details)
	}

	bad := []struct {
		name string
		req  *catalogv1.AppendEventRequest
		want string
	}{
		{"bad type", &catalogv1.AppendEventRequest{Type: "Admission Decided"}, "type"},
		{"bad digest", &catalogv1.AppendEventRequest{Type: "admission.decided", SubjectDigest: "sha256:xyz"}, "subject_digest"},
		{"details array", &catalogv1.AppendEventRequest{Type: "admission.decided", Details: []byte(`[1]`)}, "JSON object"},
		{"details too big", &catalogv1.AppendEventRequest{Type: "admission.decided", Details: []byte(`{"x":"` + strings.Repeat("a", 64<<10) + `"}`)}, "details"},
		{"bad wait", &catalogv1.AppendEventRequest{Type: "admission.decided", Wait: 7}, "wait"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := gk.AppendEvent(t.Context(), tt.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want InvalidArgument mentioning %q", err, tt.want)
			}
		})
	}
	// Even its emitter logs artifact.published through RecordArtifact only.
	_, err = e.client(t, "/service/publisher").AppendEvent(t.Context(), &catalogv1.AppendEventRequest{Type: tlog.TypeArtifactPublished})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "RecordArtifact only") {
		t.Errorf("publisher appends artifact.published: got %v, want InvalidArgument", err)
	}
}

func TestRecordRejectsInvalid(t *testing.T) {
	e := newEnv(t)
	pub := e.client(t, "/service/publisher")
	tests := []struct {
		name   string
		modify func(*catalogv1.RecordArtifactRequest)
		want   string
	}{
		{"no artifact", func(r *catalogv1.RecordArtifactRequest) { r.Artifact = nil }, "artifact is missing"},
		{"name", func(r *catalogv1.RecordArtifactRequest) { r.Artifact.Name = "../etc" }, "name"},
		{"version", func(r *catalogv1.RecordArtifactRequest) { r.Artifact.Version = "1 0" }, "version"},
		{"digest", func(r *catalogv1.RecordArtifactRequest) { r.Artifact.Digest = "md5:abc" }, "digest"},
		{"builder", func(r *catalogv1.RecordArtifactRequest) { r.Artifact.BuilderId = "ci" }, "builder_id"},
		{"envelope missing", func(r *catalogv1.RecordArtifactRequest) { r.Envelope = nil }, "envelope is missing"},
		{"envelope not JSON", func(r *catalogv1.RecordArtifactRequest) { r.Envelope = []byte("{") }, "envelope"},
		{"envelope unsigned", func(r *catalogv1.RecordArtifactRequest) {
			r.Envelope = []byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[]}`)
		}, "0 signatures"},
		{"envelope for other bytes", func(r *catalogv1.RecordArtifactRequest) {
			r.Envelope = envelope("app", r.Artifact.Version, digestOf("y"))
		}, "another artifact"},
		{"envelope for other name", func(r *catalogv1.RecordArtifactRequest) {
			r.Envelope = envelope("other", r.Artifact.Version, digestOf("x"))
		}, "another artifact"},
		{"envelope payload type", func(r *catalogv1.RecordArtifactRequest) {
			r.Envelope = bytes.Replace(r.Envelope, []byte("vnd.in-toto+json"), []byte("json"), 1)
		}, "payloadType"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := recordReq("app", "1.0.0", "x")
			tt.modify(req)
			_, err := pub.RecordArtifact(t.Context(), req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want InvalidArgument mentioning %q", err, tt.want)
			}
		})
	}
}

func TestGetArtifactNotFoundAndAmbiguous(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, "/deployer/pipeline")
	_, err := c.GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Name: "app", Version: "9.9.9"})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "app@9.9.9") {
		t.Errorf("by name: got %v, want NotFound naming app@9.9.9", err)
	}
	d := digestOf("nothing")
	_, err = c.GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Digest: d})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), d) {
		t.Errorf("by digest: got %v, want NotFound naming %s", err, d)
	}
	_, err = c.GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Name: "app", Digest: d})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("name and digest: got %v, want InvalidArgument", err)
	}

	pub := e.client(t, "/service/publisher")
	for _, v := range []string{"1.0.0", "1.0.1"} {
		if _, err := pub.RecordArtifact(t.Context(), recordReq("app", v, "same bytes")); err != nil {
			t.Fatal(err)
		}
	}
	_, err = c.GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Digest: digestOf("same bytes")})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "app@1.0.0, app@1.0.1") {
		t.Errorf("ambiguous digest: got %v, want InvalidArgument listing both", err)
	}
}

func TestConcurrentRecords(t *testing.T) {
	e := newEnv(t)
	pub := e.client(t, "/service/publisher")
	const n = 50
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		indices = map[int64]string{}
	)
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			v := fmt.Sprintf("1.0.%d", i)
			resp, err := pub.RecordArtifact(t.Context(), recordReq("app", v, "content "+v))
			if err != nil {
				t.Errorf("record %s: %v", v, err)
				return
			}
			_, le := checkEntry(t, e.vkey, resp.GetEntry())
			if le.Subject.Version != v {
				t.Errorf("record %s: entry is for %s", v, le.Subject.Version)
			}
			mu.Lock()
			defer mu.Unlock()
			if other, dup := indices[resp.GetEntry().GetIndex()]; dup {
				t.Errorf("index %d given to %s and %s", resp.GetEntry().GetIndex(), other, v)
			}
			indices[resp.GetEntry().GetIndex()] = v
		})
	}
	wg.Wait()
	t.Logf("%d concurrent records took %v", n, time.Since(start))
	if len(indices) != n {
		t.Fatalf("%d distinct indices, want %d", len(indices), n)
	}
	for i := range int64(n) {
		if _, ok := indices[i]; !ok {
			t.Errorf("index %d not assigned", i)
		}
	}
}

func TestRestartKeepsRecordsAndConsistency(t *testing.T) {
	e := newEnv(t)
	pub := e.client(t, "/service/publisher")
	var before []*catalogv1.RecordArtifactResponse
	for _, v := range []string{"1.0.0", "1.0.1", "1.0.2"} {
		r, err := pub.RecordArtifact(t.Context(), recordReq("app", v, v))
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, r)
	}
	cpResp, err := pub.GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	older, err := tlog.OpenCheckpoint(cpResp.GetCheckpoint(), e.vkey)
	if err != nil {
		t.Fatal(err)
	}

	e.restart(t)
	pub = e.client(t, "/service/publisher")
	for i, v := range []string{"1.0.0", "1.0.1", "1.0.2"} {
		got, err := pub.GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Name: "app", Version: v})
		if err != nil {
			t.Fatalf("after restart, GetArtifact %s: %v", v, err)
		}
		checkEntry(t, e.vkey, got.GetEntry())
		if diff := cmp.Diff(before[i].GetEntry(), got.GetEntry(), cmpProto()); diff != "" {
			t.Errorf("entry of %s changed across restart (-before +after):\n%s", v, diff)
		}
	}
	again, err := pub.RecordArtifact(t.Context(), recordReq("app", "1.0.1", "1.0.1"))
	if err != nil || again.GetCreated() {
		t.Errorf("re-record after restart: created=%v, %v", again.GetCreated(), err)
	}
	if _, err := pub.RecordArtifact(t.Context(), recordReq("app", "2.0.0", "2.0.0")); err != nil {
		t.Fatal(err)
	}
	cpResp, err = pub.GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	newer, err := tlog.OpenCheckpoint(cpResp.GetCheckpoint(), e.vkey)
	if err != nil {
		t.Fatal(err)
	}
	if newer.Size != older.Size+1 {
		t.Errorf("log size %d → %d, want one more entry", older.Size, newer.Size)
	}
	proof, err := e.log.ConsistencyProof(t.Context(), older.Size, newer.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.VerifyConsistency(older, newer, proof); err != nil {
		t.Errorf("log not consistent across restart: %v", err)
	}
}

func TestFailsClosed(t *testing.T) {
	e := newEnv(t)
	pub := e.client(t, "/service/publisher")
	if _, err := pub.RecordArtifact(t.Context(), recordReq("app", "1.0.0", "x")); err != nil {
		t.Fatal(err)
	}
	// The log's tree state cannot be read. (A directory in its place,
	// rather than nothing, so that Tessera does not write it anew while
	// the test looks.)
	stateFile := filepath.Join(e.dir, "log", ".state", "treeState")
	saved, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(stateFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(stateFile, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = pub.GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})
	if st := status.Convert(err); st.Code() != codes.Unavailable || strings.Contains(st.Message(), e.dir) {
		t.Errorf("GetCheckpoint without the log's tree state: got %v, want Unavailable without internal detail", err)
	}
	if err := os.Remove(stateFile); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stateFile, saved, 0o644); err != nil {
		t.Fatal(err)
	}

	// The database goes away.
	e.store.Close()
	_, err = pub.GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Name: "app", Version: "1.0.0"})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("GetArtifact without a database: got %v, want Unavailable", err)
	}
	_, err = pub.RecordArtifact(t.Context(), recordReq("app", "2.0.0", "y"))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("RecordArtifact without a database: got %v, want Unavailable", err)
	}
	// The log is the events' write-ahead record: the first event after the
	// database went away is in the log (stored when the database is back),
	// but its proof cannot be stored, so the caller waiting for it gets
	// Unavailable; from then on events are refused before the log.
	for i := range 3 {
		if _, err := pub.AppendEvent(t.Context(), &catalogv1.AppendEventRequest{Type: "artifact.uploaded"}); status.Code(err) != codes.Unavailable {
			t.Errorf("AppendEvent %d without a database: got %v, want Unavailable", i, err)
		}
	}
	cp, err := pub.GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := tlog.OpenCheckpoint(cp.GetCheckpoint(), e.vkey); c == nil || c.Size != 2 {
		t.Errorf("no artifact may reach the log without its database row, and events are refused once the database fails; checkpoint %v", c)
	}

	// The log's tiles are changed on disk: the catalog, which signs
	// checkpoints of the tree the tiles hold, signs none that does not
	// extend the last one it signed.
	var changed int
	if err := filepath.WalkDir(filepath.Join(e.dir, "log", "tile"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			return err
		}
		b[len(b)/2] ^= 1
		changed++
		return os.WriteFile(p, b, 0o644)
	}); err != nil || changed == 0 {
		t.Fatalf("changing the tiles: %d changed, %v", changed, err)
	}
	if _, err := e.log.Sequence(t.Context(), []byte("after the change")); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.GetCheckpoint(t.Context(), &catalogv1.GetCheckpointRequest{}); status.Code(err) != codes.Internal {
		t.Errorf("GetCheckpoint over changed tiles: got %v, want Internal", err)
	}
}

func cmpProto() cmp.Option {
	return cmp.Comparer(func(a, b *catalogv1.LogEntry) bool {
		return a.GetIndex() == b.GetIndex() && string(a.GetLeaf()) == string(b.GetLeaf()) &&
			cmp.Equal(a.GetInclusionProof(), b.GetInclusionProof()) && string(a.GetCheckpoint()) == string(b.GetCheckpoint())
	})
}

// BenchmarkRecordArtifact measures one publisher recording artifacts one
// after another: the latency of a record, including the wait for a signed
// checkpoint that covers it.
func BenchmarkRecordArtifact(b *testing.B) {
	benchmarkRecord(b, 1)
}

// BenchmarkRecordArtifactConcurrent measures throughput with many records
// in flight; they share Tessera batches and database commits.
func BenchmarkRecordArtifactConcurrent(b *testing.B) {
	for _, n := range []int{64, 512} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchmarkRecord(b, n) })
	}
}

func benchmarkRecord(b *testing.B, concurrency int) {
	e := newEnv(b)
	pub := e.client(b, "/service/publisher")
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for range concurrency {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				v := fmt.Sprintf("1.0.%d", i)
				if _, err := pub.RecordArtifact(context.Background(), recordReq("app", v, v)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}
