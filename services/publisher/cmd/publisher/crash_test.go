package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/services/publisher/internal/bindings"
	"github.com/custody-dev/custody/services/publisher/internal/server"
)

// childArgsEnv, when set, makes the test binary run the publisher with
// these JSON-encoded arguments instead of the tests, so a test can SIGKILL
// it.
const childArgsEnv = "PUBLISHER_TEST_CHILD_ARGS"

func TestMain(m *testing.M) {
	if v := os.Getenv(childArgsEnv); v != "" {
		var args []string
		if err := json.Unmarshal([]byte(v), &args); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, args, os.Getenv, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "publisher:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// uploadKills is how many times TestUploadsSurviveRepeatedKills kills the
// publisher.
const uploadKills = 50

// fakeSigner signs every statement (with a fake signature: the publisher does
// not check it) and survives the publisher's restarts.
type fakeSigner struct {
	signerv1.UnimplementedSignerServiceServer
}

func sign(st []byte) ([]byte, error) {
	return attest.SignEnvelope(attest.PayloadType, st, "k", func([]byte) ([]byte, error) { return []byte("sig"), nil })
}

func (fakeSigner) SignArtifact(_ context.Context, req *signerv1.SignArtifactRequest) (*signerv1.SignArtifactResponse, error) {
	env, err := sign(req.GetStatement())
	return &signerv1.SignArtifactResponse{Envelope: env, KeyId: "k"}, err
}

func (fakeSigner) SignArtifacts(_ context.Context, req *signerv1.SignArtifactsRequest) (*signerv1.SignArtifactsResponse, error) {
	resp := &signerv1.SignArtifactsResponse{}
	for _, it := range req.GetItems() {
		env, err := sign(it.GetStatement())
		if err != nil {
			return nil, err
		}
		resp.Results = append(resp.Results, &signerv1.SignArtifactsResult{Envelope: env, KeyId: "k"})
	}
	return resp, nil
}

// catalog records artifacts in memory, across the publisher's restarts.
type catalog struct {
	catalogv1.UnimplementedCatalogServiceServer
	mu      sync.Mutex
	records map[string]*catalogv1.GetArtifactResponse
}

func (c *catalog) RecordArtifact(_ context.Context, req *catalogv1.RecordArtifactRequest) (*catalogv1.RecordArtifactResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := req.GetArtifact().GetName() + "@" + req.GetArtifact().GetVersion()
	e := &catalogv1.LogEntry{Index: int64(len(c.records))}
	c.records[key] = &catalogv1.GetArtifactResponse{Artifact: req.GetArtifact(), Envelope: req.GetEnvelope(), Entry: e}
	return &catalogv1.RecordArtifactResponse{Entry: e, Created: true}, nil
}

func (c *catalog) GetArtifact(_ context.Context, req *catalogv1.GetArtifactRequest) (*catalogv1.GetArtifactResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.records[req.GetName()+"@"+req.GetVersion()]; ok {
		return r, nil
	}
	return nil, errNotFound
}

var errNotFound = status.Error(codes.NotFound, "no such artifact")

func serveAs(t *testing.T, td *identitytest.TrustDomain, path string, policy rpc.Policy, register func(*grpc.Server)) string {
	t.Helper()
	srv := rpc.NewServer(rpc.ServerConfig{Source: td.Source(t, path), TrustDomain: td.TD, Policy: policy,
		Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard(path)})
	register(srv.Server)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

type ack struct{ version, digest string }

type child struct {
	cmd  *exec.Cmd
	done chan error
	log  string
}

// TestUploadsSurviveRepeatedKills uploads from several builders, some
// uploads resumable, and SIGKILLs the publisher at a random moment,
// uploadKills times, each time restarting it on the same data directory.
// Then: every acknowledged upload downloads byte-identical and verifies;
// every name@version bound is whole (no partial artifact is visible); and
// no temporary file of an interrupted write is left.
func TestUploadsSurviveRepeatedKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills processes")
	}
	td := identitytest.New(t, "custody.test")
	dir := t.TempDir()
	svidDir := filepath.Join(dir, "svid")
	os.MkdirAll(svidDir, 0o700)
	issued, err := td.CA.IssueSVID(td.ID("/service/publisher"), 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{identity.SVIDFile: issued.CertPEM, identity.SVIDKeyFile: issued.KeyPEM, identity.BundleFile: td.CA.CertPEM()} {
		if err := os.WriteFile(filepath.Join(svidDir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pub := rpc.ID(td.ID("/service/publisher"))
	sd, cd := signerv1.SignerService_ServiceDesc, catalogv1.CatalogService_ServiceDesc
	signerAddr := serveAs(t, td, "/service/signer", rpc.Policy{rpc.Method(sd, "SignArtifact"): {pub}, rpc.Method(sd, "SignArtifacts"): {pub}},
		func(s *grpc.Server) { signerv1.RegisterSignerServiceServer(s, fakeSigner{}) })
	cat := &catalog{records: map[string]*catalogv1.GetArtifactResponse{}}
	catalogAddr := serveAs(t, td, "/service/catalog", rpc.Policy{rpc.Method(cd, "RecordArtifact"): {pub}, rpc.Method(cd, "GetArtifact"): {pub}},
		func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, cat) })
	endpoints := filepath.Join(dir, "run", "publisher.json")
	os.MkdirAll(filepath.Dir(endpoints), 0o700)
	dataDir := filepath.Join(dir, "data")
	args, _ := json.Marshal([]string{"--trust-domain", "custody.test", "--svid-dir", svidDir, "--endpoints-file", endpoints,
		"--data-dir", dataDir, "--signer-addr", signerAddr, "--catalog-addr", catalogAddr,
		"--kek", "soft", "--soft-kek-file", filepath.Join(dir, "kek.json")})

	start := func(round int) (*child, string) {
		os.Remove(endpoints)
		c := &child{done: make(chan error, 1), log: filepath.Join(dir, fmt.Sprintf("publisher-%d.log", round))}
		logFile, err := os.Create(c.log)
		if err != nil {
			t.Fatal(err)
		}
		c.cmd = exec.Command(os.Args[0], "-test.run=^$")
		c.cmd.Env = append(os.Environ(), childArgsEnv+"="+string(args))
		c.cmd.Stderr = logFile
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { c.done <- c.cmd.Wait(); logFile.Close() }()
		t.Cleanup(func() { c.cmd.Process.Kill() })
		deadline := time.Now().Add(30 * time.Second)
		for {
			var eps map[string]string
			if b, err := os.ReadFile(endpoints); err == nil && json.Unmarshal(b, &eps) == nil && eps["grpc"] != "" {
				return c, eps["grpc"]
			}
			select {
			case err := <-c.done:
				b, _ := os.ReadFile(c.log)
				t.Fatalf("round %d: publisher exited: %v\n%s", round, err, b)
			default:
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(c.log)
				t.Fatalf("round %d: endpoints file not written:\n%s", round, b)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	var (
		mu   sync.Mutex
		acks []ack
		next int
	)
	for round := range uploadKills + 1 {
		proc, addr := start(round)
		conn, err := rpc.Dial(addr, td.ID("/service/publisher"), td.Source(t, "/builder/ci"), telemetry.Discard("test"), server.DialOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		client := publisherv1.NewPublisherServiceClient(conn)
		if round == uploadKills {
			check(t, publisherv1.NewPublisherServiceClient(dial(t, td, addr, "/admin/ops")), acks, dataDir)
			conn.Close()
			proc.cmd.Process.Kill()
			break
		}
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for ctx.Err() == nil {
					mu.Lock()
					n := next
					next++
					mu.Unlock()
					data := make([]byte, mrand.IntN(3<<20))
					rand.Read(data)
					h := &publisherv1.UploadHeader{Name: "app", Version: fmt.Sprintf("1.0.%d", n), Channel: "staging", Size: int64(len(data))}
					if w%2 == 1 {
						h.UploadId = fmt.Sprintf("crash-loop-upload-%06d", n)
					}
					resp, err := send(ctx, client, h, data)
					if err != nil {
						continue
					}
					sum := sha256.Sum256(data)
					if resp.GetDigest() != "sha256:"+hex.EncodeToString(sum[:]) {
						t.Errorf("%s acknowledged as %s, its bytes hash otherwise", h.GetVersion(), resp.GetDigest())
					}
					mu.Lock()
					acks = append(acks, ack{h.GetVersion(), resp.GetDigest()})
					mu.Unlock()
				}
			})
		}
		time.Sleep(time.Duration(50+mrand.IntN(400)) * time.Millisecond)
		if err := proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-proc.done
		cancel()
		wg.Wait()
		conn.Close()
	}
	if len(acks) < uploadKills {
		t.Fatalf("only %d uploads acknowledged over %d runs: the kills came too early to test anything", len(acks), uploadKills)
	}
	t.Logf("%d kills; %d uploads acknowledged of %d attempted", uploadKills, len(acks), next)
}

func dial(t *testing.T, td *identitytest.TrustDomain, addr, as string) *grpc.ClientConn {
	t.Helper()
	c, err := rpc.Dial(addr, td.ID("/service/publisher"), td.Source(t, as), telemetry.Discard("test"), server.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(ctx context.Context, c publisherv1.PublisherServiceClient, h *publisherv1.UploadHeader, data []byte) (*publisherv1.UploadResponse, error) {
	stream, err := c.Upload(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Header{Header: h}}); err != nil {
		return stream.CloseAndRecv()
	}
	for off := 0; off < len(data); off += 256 << 10 {
		if err := stream.Send(&publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_Chunk{Chunk: data[off:min(off+256<<10, len(data))]}}); err != nil {
			return stream.CloseAndRecv()
		}
	}
	return stream.CloseAndRecv()
}

func fetch(ctx context.Context, c publisherv1.PublisherServiceClient, digest string) ([]byte, error) {
	stream, err := c.Download(ctx, &publisherv1.DownloadRequest{Digest: digest})
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
			return nil, err
		}
		out.Write(msg.GetChunk())
	}
}

// check verifies the store after the last restart.
func check(t *testing.T, admin publisherv1.PublisherServiceClient, acks []ack, dataDir string) {
	t.Helper()
	verify := func(what, digest string) {
		got, err := fetch(t.Context(), admin, digest)
		sum := sha256.Sum256(got)
		if err != nil || "sha256:"+hex.EncodeToString(sum[:]) != digest {
			t.Errorf("%s: download of %s: %v", what, digest, err)
			return
		}
		if _, err := admin.VerifyBlob(t.Context(), &publisherv1.VerifyBlobRequest{Digest: digest}); err != nil {
			t.Errorf("%s: VerifyBlob %s: %v", what, digest, err)
		}
	}
	// Temporary files of the interrupted writes are gone after the restart.
	for _, tmp := range []string{filepath.Join(dataDir, "blobs", "tmp"), filepath.Join(dataDir, "bindings", "tmp")} {
		filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				t.Errorf("temporary file %s left after the restart", p)
			}
			return nil
		})
	}
	for _, a := range acks {
		verify("acknowledged app@"+a.version, a.digest)
	}
	// No partial artifact: every binding, acknowledged or not, is whole.
	binds, err := bindings.Open(filepath.Join(dataDir, "bindings"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := binds.List(func(b bindings.Binding) error {
		n++
		verify("bound "+b.Name+"@"+b.Version, b.Digest)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n < len(acks) {
		t.Errorf("%d bindings, fewer than the %d acknowledged uploads", n, len(acks))
	}
}
