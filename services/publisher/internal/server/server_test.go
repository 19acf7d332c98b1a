package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/publisher/internal/bindings"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/local"
	"github.com/custody-dev/custody/services/publisher/internal/kek/soft"
	"github.com/custody-dev/custody/services/publisher/internal/resume"
	"github.com/custody-dev/custody/services/publisher/internal/retention"
	"github.com/custody-dev/custody/services/publisher/internal/sealed"
	"github.com/custody-dev/custody/services/publisher/internal/server"
)

// fakeSigner signs nothing for real; it records statements and can be down.
type fakeSigner struct {
	signerv1.UnimplementedSignerServiceServer
	mu         sync.Mutex
	down       bool
	refusal    string // FailedPrecondition with this message, as when approvals are missing
	statements [][]byte
}

func (f *fakeSigner) SignArtifact(_ context.Context, req *signerv1.SignArtifactRequest) (*signerv1.SignArtifactResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, status.Error(codes.Unavailable, "key back end down")
	}
	if f.refusal != "" {
		return nil, status.Error(codes.FailedPrecondition, f.refusal)
	}
	f.statements = append(f.statements, req.GetStatement())
	env, _ := attest.SignEnvelope(attest.PayloadType, req.GetStatement(), "k", func([]byte) ([]byte, error) { return []byte("sig"), nil })
	return &signerv1.SignArtifactResponse{Envelope: env, KeyId: "k"}, nil
}

// fakeCatalog keeps records in memory.
type fakeCatalog struct {
	catalogv1.UnimplementedCatalogServiceServer
	mu      sync.Mutex
	records map[string]*catalogv1.GetArtifactResponse
	sboms   []*catalogv1.RecordSBOMRequest
	events  []tlog.Entry
	down    bool // retention's questions fail
}

func (f *fakeCatalog) RecordArtifact(_ context.Context, req *catalogv1.RecordArtifactRequest) (*catalogv1.RecordArtifactResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := req.GetArtifact().GetName() + "@" + req.GetArtifact().GetVersion()
	entry := &catalogv1.LogEntry{Index: int64(len(f.records))}
	f.records[key] = &catalogv1.GetArtifactResponse{Artifact: req.GetArtifact(), Envelope: req.GetEnvelope(), Entry: entry}
	return &catalogv1.RecordArtifactResponse{Entry: entry, Created: true}, nil
}

func (f *fakeCatalog) GetArtifact(_ context.Context, req *catalogv1.GetArtifactRequest) (*catalogv1.GetArtifactResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := f.records[req.GetName()+"@"+req.GetVersion()]; ok {
		return r, nil
	}
	return nil, status.Error(codes.NotFound, "no such artifact")
}

type fixture struct {
	td      *identitytest.TrustDomain
	addr    string
	dir     string
	signer  *fakeSigner
	catalog *fakeCatalog
	tel     *telemetry.Telemetry
	kek     *soft.KEK
}

func serve(t *testing.T, td *identitytest.TrustDomain, idPath string, policy rpc.Policy, register func(*grpc.Server)) string {
	t.Helper()
	srv := rpc.NewServer(rpc.ServerConfig{Source: td.Source(t, idPath), TrustDomain: td.TD, Policy: policy,
		Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard(idPath), MaxRecvMsgSize: sbom.MaxMessageBytes})
	register(srv.Server)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

func start(t *testing.T) *fixture { return startWith(t, nil) }

// startWith starts a publisher whose limits configure may change; uploads
// with an upload id are resumable, their bytes under dir/partial.
func startWith(t *testing.T, configure func(*server.Server)) *fixture {
	t.Helper()
	return startFull(t, configure, nil, "")
}

// startFull is startWith with a retention policy (nil: none),
// and its store under dir ("": a temporary directory).
func startFull(t *testing.T, configure func(*server.Server), retained *retention.Policy, dir string) *fixture {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	td := identitytest.New(t, "custody.test")
	f := &fixture{td: td, dir: dir, signer: &fakeSigner{}, catalog: &fakeCatalog{records: map[string]*catalogv1.GetArtifactResponse{}}, tel: telemetry.Discard("publisher")}
	pub := rpc.ID(td.ID("/service/publisher"))
	signerAddr := serve(t, td, "/service/signer", rpc.Policy{rpc.Method(signerv1.SignerService_ServiceDesc, "SignArtifact"): {pub}},
		func(s *grpc.Server) { signerv1.RegisterSignerServiceServer(s, f.signer) })
	catalogAddr := serve(t, td, "/service/catalog", rpc.Policy{
		rpc.Method(catalogv1.CatalogService_ServiceDesc, "RecordArtifact"):  {pub},
		rpc.Method(catalogv1.CatalogService_ServiceDesc, "GetArtifact"):     {pub},
		rpc.Method(catalogv1.CatalogService_ServiceDesc, "SearchArtifacts"): {pub},
		rpc.Method(catalogv1.CatalogService_ServiceDesc, "ListEvents"):      {pub},
		rpc.Method(catalogv1.CatalogService_ServiceDesc, "GetLineage"):      {pub},
		rpc.Method(catalogv1.CatalogService_ServiceDesc, "AppendEvent"):     {pub},
		rpc.Method(catalogv1.CatalogService_ServiceDesc, "RecordSBOM"):      {pub},
	}, func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, f.catalog) })
	src := td.Source(t, "/service/publisher")
	sc, _ := rpc.Dial(signerAddr, td.ID("/service/signer"), src, f.tel)
	cc, _ := rpc.Dial(catalogAddr, td.ID("/service/catalog"), src, f.tel)
	t.Cleanup(func() { sc.Close(); cc.Close() })
	objects, err := local.New(filepath.Join(f.dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := soft.Open(filepath.Join(f.dir, "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	blobs := sealed.New(objects, k, slog.New(slog.DiscardHandler))
	binds, err := bindings.Open(filepath.Join(f.dir, "bindings"))
	if err != nil {
		t.Fatal(err)
	}
	f.kek = k
	policy := server.Policy(td.TD)
	maps.Copy(policy, server.StorePolicy(td.TD))
	srv := rpc.NewServer(rpc.ServerConfig{Source: src, TrustDomain: td.TD, Policy: policy,
		Logger: slog.New(slog.DiscardHandler), Telemetry: f.tel, MaxRecvMsgSize: server.MaxRecvMsgSize})
	api := server.New(blobs, binds, signerv1.NewSignerServiceClient(sc), catalogv1.NewCatalogServiceClient(cc), slog.New(slog.DiscardHandler), f.tel.Metrics)
	partial, err := resume.Open(resume.Config{Dir: filepath.Join(f.dir, "partial"), TTL: time.Hour, MaxPerCaller: 4, KEK: k})
	if err != nil {
		t.Fatal(err)
	}
	api.SetResume(partial)
	if configure != nil {
		configure(api)
	}
	store := server.NewStore(blobs, slog.New(slog.DiscardHandler))
	runner, err := retention.New(retention.Config{Policy: retained, Blobs: blobs, Bindings: binds, Catalog: catalogv1.NewCatalogServiceClient(cc),
		JournalDir: filepath.Join(f.dir, "retention"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	api.SetRetention(runner)
	if retained != nil {
		store.SetRetention(runner)
	}
	publisherv1.RegisterStoreServiceServer(srv, store)
	publisherv1.RegisterPublisherServiceServer(srv, api)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	f.addr = l.Addr().String()
	return f
}

func (f *fixture) client(t *testing.T, as string) publisherv1.PublisherServiceClient {
	return publisherv1.NewPublisherServiceClient(f.dial(t, as))
}

func (f *fixture) dial(t *testing.T, as string) *grpc.ClientConn {
	t.Helper()
	c, err := rpc.Dial(f.addr, f.td.ID("/service/publisher"), f.td.Source(t, as), telemetry.Discard("c"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// upload sends a header and data in chunks of chunk bytes.
func upload(ctx context.Context, c publisherv1.PublisherServiceClient, h *publisherv1.UploadHeader, data io.Reader, chunk int) (*publisherv1.UploadResponse, error) {
	stream, err := c.Upload(ctx)
	if err != nil {
		return nil, err
	}
	if h != nil {
		if err := stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Header{Header: h}}); err != nil {
			return stream.CloseAndRecv()
		}
	}
	buf := make([]byte, chunk)
	for {
		n, rerr := io.ReadFull(data, buf)
		if n > 0 {
			if err := stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Chunk{Chunk: buf[:n]}}); err != nil {
				return stream.CloseAndRecv()
			}
		}
		if rerr != nil {
			break
		}
	}
	return stream.CloseAndRecv()
}

func header(version string, size int64) *publisherv1.UploadHeader {
	return &publisherv1.UploadHeader{Name: "app", Version: version, Channel: "staging", Size: size, SourceRepo: "https://git.example/app", SourceCommit: "abc"}
}

func download(t *testing.T, c publisherv1.PublisherServiceClient, digest string) ([]byte, error) {
	stream, err := c.Download(t.Context(), &publisherv1.DownloadRequest{Digest: digest})
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
		out.Write(msg.GetChunk())
	}
}

func TestUploadDownloadAndProvenance(t *testing.T) {
	f := start(t)
	data := make([]byte, 3<<20+17)
	rand.Read(data)
	resp, err := upload(t.Context(), f.client(t, "/builder/ci"), header("1.0.0", int64(len(data))), bytes.NewReader(data), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetCreated() || resp.GetSize() != int64(len(data)) || len(resp.GetEnvelope()) == 0 {
		t.Fatalf("response %+v", resp)
	}
	got, err := download(t, f.client(t, "/edge/dev"), resp.GetDigest())
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download: %v (equal %v)", err, bytes.Equal(got, data))
	}
	st, err := attest.ParseStatement(f.signer.statements[0])
	if err != nil {
		t.Fatal(err)
	}
	a, err := st.Artifact()
	if err != nil {
		t.Fatal(err)
	}
	if a.BuilderID != "spiffe://custody.test/builder/ci" || a.Digest != resp.GetDigest() || a.Channel != "staging" {
		t.Fatalf("provenance %+v", a)
	}
}

func TestIdempotentAndConflict(t *testing.T) {
	f := start(t)
	c := f.client(t, "/builder/ci")
	first, err := upload(t.Context(), c, header("1.0.0", 0), strings.NewReader("hello"), 2)
	if err != nil {
		t.Fatal(err)
	}
	again, err := upload(t.Context(), c, header("1.0.0", 0), strings.NewReader("hello"), 3)
	if err != nil || again.GetCreated() || again.GetDigest() != first.GetDigest() {
		t.Fatalf("same bytes again: %+v %v", again, err)
	}
	if len(f.signer.statements) != 1 {
		t.Errorf("signed %d times, want once", len(f.signer.statements))
	}
	_, err = upload(t.Context(), c, header("1.0.0", 0), strings.NewReader("other"), 5)
	if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), first.GetDigest()) {
		t.Fatalf("other bytes: %v, want AlreadyExists naming %s", err, first.GetDigest())
	}
}

func TestAuthorization(t *testing.T) {
	f := start(t)
	_, err := upload(t.Context(), f.client(t, "/deployer/pipeline"), header("1.0.0", 0), strings.NewReader("x"), 1)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "Upload denied for spiffe://custody.test/deployer/pipeline") {
		t.Fatalf("deployer upload: %v", err)
	}
	// Only edges (and admins) read blobs: a deployer skipping the
	// gatekeeper and the broker is refused (ATTACKS.md #38).
	for _, who := range []string{"/builder/ci", "/deployer/pipeline", "/service/gatekeeper", "/approver/alice"} {
		_, err = download(t, f.client(t, who), "sha256:"+strings.Repeat("0", 64))
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "Download denied for spiffe://custody.test"+who) {
			t.Errorf("%s download: %v, want PermissionDenied naming the caller", who, err)
		}
	}
	for _, who := range []string{"/edge/dev", "/admin/ops"} {
		if _, err := download(t, f.client(t, who), "sha256:"+strings.Repeat("0", 64)); status.Code(err) != codes.NotFound {
			t.Errorf("%s download of a missing blob: %v, want NotFound (allowed)", who, err)
		}
	}
	_, err = f.client(t, "/deployer/pipeline").GetUploadStatus(t.Context(), &publisherv1.GetUploadStatusRequest{UploadId: strings.Repeat("a", 32)})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("deployer GetUploadStatus: %v", err)
	}
	_, err = f.client(t, "/deployer/pipeline").VerifyBlob(t.Context(), &publisherv1.VerifyBlobRequest{Digest: "sha256:" + strings.Repeat("0", 64)})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("deployer VerifyBlob: %v", err)
	}
}

func TestRejectsBadUploads(t *testing.T) {
	f := start(t)
	c := f.client(t, "/builder/ci")
	tests := map[string]struct {
		h     *publisherv1.UploadHeader
		data  string
		chunk int
	}{
		"missing header": {nil, "data", 4},
		"bad name":       {&publisherv1.UploadHeader{Name: "../x", Version: "1", Channel: "dev"}, "d", 1},
		"no channel":     {&publisherv1.UploadHeader{Name: "app", Version: "1"}, "d", 1},
		"size mismatch":  {header("2.0.0", 10), "short", 5},
		"more than size": {header("2.0.1", 2), "longer", 6},
		"oversize chunk": {header("2.0.2", 0), strings.Repeat("x", server.ChunkSize+1), server.ChunkSize + 1},
	}
	for name, tt := range tests {
		_, err := upload(t.Context(), c, tt.h, strings.NewReader(tt.data), tt.chunk)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	for _, d := range []string{"data", "keys"} {
		if entries, _ := os.ReadDir(filepath.Join(f.dir, "blobs", "objects", d)); len(entries) != 0 {
			t.Errorf("rejected uploads left %d entries under %s", len(entries), d)
		}
	}
}

func TestCorruptionIsDataLoss(t *testing.T) {
	f := start(t)
	resp, err := upload(t.Context(), f.client(t, "/builder/ci"), header("1.0.0", 0), strings.NewReader(strings.Repeat("payload", 1000)), 1000)
	if err != nil {
		t.Fatal(err)
	}
	gk := f.client(t, "/service/gatekeeper")
	if _, err := gk.VerifyBlob(t.Context(), &publisherv1.VerifyBlobRequest{Digest: resp.GetDigest()}); err != nil {
		t.Fatal(err)
	}
	path := ciphertextPath(t, f.dir, resp.GetDigest())
	b, _ := os.ReadFile(path)
	b[10] ^= 1
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = download(t, f.client(t, "/edge/dev"), resp.GetDigest())
	if status.Code(err) != codes.DataLoss || !strings.Contains(err.Error(), resp.GetDigest()) {
		t.Fatalf("download of a corrupted blob: %v, want DataLoss naming the digest", err)
	}
	_, err = gk.VerifyBlob(t.Context(), &publisherv1.VerifyBlobRequest{Digest: resp.GetDigest()})
	if status.Code(err) != codes.DataLoss {
		t.Fatalf("VerifyBlob of a corrupted blob: %v, want DataLoss", err)
	}
	if _, err := gk.VerifyBlob(t.Context(), &publisherv1.VerifyBlobRequest{Digest: "sha256:" + strings.Repeat("1", 64)}); status.Code(err) != codes.NotFound {
		t.Fatalf("VerifyBlob of a missing blob: %v, want NotFound", err)
	}
}

func TestSignerDownThenRetryCompletes(t *testing.T) {
	f := start(t)
	c := f.client(t, "/builder/ci")
	f.signer.down = true
	_, err := upload(t.Context(), c, header("1.0.0", 0), strings.NewReader("bytes"), 5)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "signer") {
		t.Fatalf("signer down: %v, want Unavailable naming the signer", err)
	}
	f.signer.down = false
	resp, err := upload(t.Context(), c, header("1.0.0", 0), strings.NewReader("bytes"), 5)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if len(f.catalog.records) != 1 || len(resp.GetEnvelope()) == 0 {
		t.Fatalf("retry did not complete the flow: %d records", len(f.catalog.records))
	}
}

func TestSignerFailedPreconditionPassesThrough(t *testing.T) {
	f := start(t)
	c := f.client(t, "/builder/ci")
	f.signer.refusal = "approval request 0123 has 1 of 2 approvals: approvers run `custody approve 0123`; then retry the upload"
	_, err := upload(t.Context(), c, header("1.0.0", 0), strings.NewReader("bytes"), 5)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), f.signer.refusal) || !strings.Contains(err.Error(), "the blob is stored and bound") {
		t.Fatalf("signer refusal: %v, want FailedPrecondition with the signer's message and that the blob is stored and bound", err)
	}
	f.signer.refusal = ""
	if _, err := upload(t.Context(), c, header("1.0.0", 0), strings.NewReader("bytes"), 5); err != nil {
		t.Fatalf("retry once approved: %v", err)
	}
	if len(f.catalog.records) != 1 {
		t.Fatalf("%d records after the retry, want 1", len(f.catalog.records))
	}
}

// zeros is an endless source of zero bytes that allocates nothing.
type zeros struct{ left int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.left == 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.left)
	clear(p[:n])
	z.left -= n
	return int(n), nil
}

func TestLargeUploadBoundedMemory(t *testing.T) {
	f := start(t)
	// Collect often so the peak reflects what is live, not garbage
	// waiting for the next cycle; a store that buffered the blob would
	// still grow by the blob's size.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	// The live set of a streaming upload is fixed (both ends' flow-control
	// windows and chunk buffers, client and server being this process:
	// 10–17 MiB measured), and one that buffers grows with the blob: at
	// 256 MiB the bound of an eighth of the blob (32 MiB) is twice the
	// fixed part, where 128 MiB left it at the edge and the test flaked.
	const size = 256 << 20
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak uint64
	done, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				peak = max(peak, m.HeapInuse)
			}
		}
	}()
	resp, err := upload(t.Context(), f.client(t, "/builder/ci"), header("big", size), &zeros{left: size}, 1<<20)
	close(done)
	<-sampled
	if err != nil || resp.GetSize() != size {
		t.Fatalf("upload: %v", err)
	}
	growth := int64(peak) - int64(before.HeapInuse)
	t.Logf("heap in use grew by %d MiB at peak for a %d MiB upload", growth>>20, size>>20)
	if growth > size/8 {
		t.Fatalf("heap grew by %d MiB for a %d MiB upload: the upload path buffers", growth>>20, size>>20)
	}
}

// ciphertextPath finds a blob's ciphertext object through its key record.
func ciphertextPath(t *testing.T, dir, digest string) string {
	t.Helper()
	h := strings.TrimPrefix(digest, "sha256:")
	b, err := os.ReadFile(filepath.Join(dir, "blobs", "objects", "keys", "sha256", h[:2], h))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "blobs", "objects", filepath.FromSlash(rec.Data))
}
