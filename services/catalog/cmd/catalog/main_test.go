package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/syncbuf"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/translog/cosigntest"
)

// syncBuffer is the output a test reads while it is written.
type syncBuffer = syncbuf.Buffer

// setup is a data directory with the catalog's SVID files and log key, and
// a co-signing signer.
type setup struct {
	td        *identitytest.TrustDomain
	dir       string
	vkey      string
	endpoints string
	args      []string
	// cosigner co-signs behind a gRPC server at signerAddr, as the
	// signer; it keeps its state across catalog restarts.
	cosigner   *cosigntest.Cosigner
	signerAddr string
}

// startSigner serves c as the signer's co-signing API, with the production
// interceptors and the signer's policy for it.
func startSigner(t *testing.T, td *identitytest.TrustDomain, c *cosigntest.Cosigner) string {
	t.Helper()
	sd := signerv1.SignerService_ServiceDesc
	catalog := rpc.ID(td.ID("/service/catalog"))
	srv := rpc.NewServer(rpc.ServerConfig{Source: td.Source(t, "/service/signer"), TrustDomain: td.TD, Logger: slog.New(slog.DiscardHandler),
		Telemetry: telemetry.Discard("signer"), Policy: rpc.Policy{
			rpc.Method(sd, "CosignCheckpoint"):      {catalog},
			rpc.Method(sd, "GetCosignedCheckpoint"): {catalog},
		}})
	signerv1.RegisterSignerServiceServer(srv, &cosigntest.Server{C: c})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

func newSetup(t *testing.T) *setup {
	t.Helper()
	td := identitytest.New(t, "custody.test")
	dir := t.TempDir()
	svidDir := filepath.Join(dir, "svid")
	if err := os.MkdirAll(svidDir, 0o700); err != nil {
		t.Fatal(err)
	}
	issued, err := td.CA.IssueSVID(td.ID("/service/catalog"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := tlog.GenerateKey("custody.test/log")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		filepath.Join(svidDir, identity.SVIDFile):    issued.CertPEM,
		filepath.Join(svidDir, identity.SVIDKeyFile): issued.KeyPEM,
		filepath.Join(svidDir, identity.BundleFile):  td.CA.CertPEM(),
		filepath.Join(dir, "log.key"):                []byte(skey + "\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	endpoints := filepath.Join(dir, "run", "catalog.json")
	if err := os.MkdirAll(filepath.Dir(endpoints), 0o700); err != nil {
		t.Fatal(err)
	}
	cosigner, err := cosigntest.New(vkey)
	if err != nil {
		t.Fatal(err)
	}
	signerAddr := startSigner(t, td, cosigner)
	return &setup{td: td, dir: dir, vkey: vkey, endpoints: endpoints, cosigner: cosigner, signerAddr: signerAddr, args: []string{
		"--trust-domain", "custody.test", "--svid-dir", svidDir, "--endpoints-file", endpoints,
		"--data-dir", filepath.Join(dir, "data"), "--log-private-key-file", filepath.Join(dir, "log.key"),
		"--signer-addr", signerAddr,
	}}
}

// waitEndpoints waits for the endpoints file and returns the gRPC address;
// it gives up when failed returns an error.
func (s *setup) waitEndpoints(t *testing.T, failed func() error, log func() string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var eps map[string]string
		b, err := os.ReadFile(s.endpoints)
		if err == nil && json.Unmarshal(b, &eps) == nil && eps["grpc"] != "" {
			return eps["grpc"]
		}
		if err := failed(); err != nil {
			t.Fatalf("catalog stopped early: %v\n%s", err, log())
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoints file not written; log:\n%s", log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRun(t *testing.T) {
	s := newSetup(t)
	td, dir, vkey, args := s.td, s.dir, s.vkey, s.args
	// The environment is read too; flags win over it.
	env := map[string]string{"CUSTODY_DATA_DIR": "/nonexistent", "CUSTODY_LOG_LEVEL": "debug"}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, func(k string) string { return env[k] }, &stderr) }()

	addr := s.waitEndpoints(t, func() error {
		select {
		case err := <-done:
			return fmt.Errorf("run returned %v", err)
		default:
			return nil
		}
	}, stderr.String)

	conn, err := rpc.Dial(addr, td.ID("/service/catalog"), td.Source(t, "/auditor/audit"), telemetry.Discard("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := catalogv1.NewCatalogServiceClient(conn).GetCheckpoint(ctx, &catalogv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatalf("GetCheckpoint: %v", err)
	}
	cp, err := tlog.OpenCheckpoint(resp.GetCheckpoint(), vkey)
	if err != nil {
		t.Fatalf("checkpoint does not verify with the log key: %v", err)
	}
	if _, err := tlog.OpenCosigned(resp.GetCheckpoint(), "custody.test/log", s.cosigner.VerifierKey()); err != nil {
		t.Fatalf("checkpoint is not co-signed by the signer: %v", err)
	}
	if cp.Origin != "custody.test/log" || cp.Size != 0 {
		t.Errorf("checkpoint = %+v, want the empty log custody.test/log", cp)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "catalog.db")); err != nil {
		t.Errorf("database not in --data-dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "log", "checkpoint")); err != nil {
		t.Errorf("log not under --data-dir/log: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("run did not stop; log:\n%s", stderr.String())
	}
	for _, want := range []string{`"msg":"transparency log open"`, `"msg":"stopped"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, stderr.String())
		}
	}
}

func TestRunReportsEveryConfigProblem(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.key")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"nothing", nil, []string{"--trust-domain", "no identity", "--data-dir", "--log-private-key-file is required", "--signer-addr is required"}},
		{"bad cosign wait", []string{"--cosign-wait", "0s"}, []string{"--cosign-wait"}},
		{"cosign refresh under a second", []string{"--cosign-refresh", "500ms"}, []string{"--cosign-refresh 500ms: want at least 1s"}},
		{"bad key", []string{"--trust-domain", "custody.test", "--svid-dir", "x", "--data-dir", "d", "--log-private-key-file", bad}, []string{"not a note signer key"}},
		{"missing key file", []string{"--trust-domain", "custody.test", "--svid-dir", "x", "--data-dir", "d", "--log-private-key-file", bad + ".missing"}, []string{"--log-private-key-file"}},
		{"unknown flag", []string{"--log-public-key-file", "x"}, []string{"log-public-key-file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr syncBuffer
			err := run(t.Context(), tt.args, func(string) string { return "" }, &stderr)
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestWritesWaitForTheSigner: a record is confirmed only once a checkpoint
// co-signed by the signer covers it; while the signer is down or refuses,
// writes fail Unavailable naming the signer, and they work again once it is
// back, without restarting the catalog.
func TestWritesWaitForTheSigner(t *testing.T) {
	s := newSetup(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append(s.args, "--cosign-wait", "500ms"), func(string) string { return "" }, &stderr)
	}()
	addr := s.waitEndpoints(t, func() error {
		select {
		case err := <-done:
			return fmt.Errorf("run returned %v", err)
		default:
			return nil
		}
	}, stderr.String)
	conn, err := rpc.Dial(addr, s.td.ID("/service/catalog"), s.td.Source(t, "/service/publisher"), telemetry.Discard("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pub := catalogv1.NewCatalogServiceClient(conn)

	record := func(i int) (*catalogv1.RecordArtifactResponse, error) {
		return pub.RecordArtifact(ctx, crashReq(i))
	}
	coSigned := func(resp *catalogv1.RecordArtifactResponse) {
		t.Helper()
		e := resp.GetEntry()
		cp, err := tlog.OpenCosigned(e.GetCheckpoint(), "custody.test/log", s.cosigner.VerifierKey())
		if err != nil {
			t.Fatalf("entry %d: checkpoint not co-signed: %v", e.GetIndex(), err)
		}
		if err := tlog.VerifyInclusion(e.GetLeaf(), uint64(e.GetIndex()), e.GetInclusionProof(), cp); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := record(0)
	if err != nil {
		t.Fatal(err)
	}
	coSigned(resp)

	for i, fail := range []func(bool){s.cosigner.SetDown, s.cosigner.SetRefusing} {
		fail(true)
		_, err := record(10 + i)
		if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "signer") {
			t.Fatalf("RecordArtifact while the signer fails: got %v, want Unavailable naming the signer", err)
		}
		fail(false)
		// The publisher's retry completes the same record; new ones work.
		resp, err := record(10 + i)
		if err != nil {
			t.Fatalf("retry once the signer is back: %v", err)
		}
		coSigned(resp)
		if resp, err = record(20 + i); err != nil {
			t.Fatalf("new record once the signer is back: %v", err)
		}
		coSigned(resp)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "checkpoint co-signing resumed") {
		t.Errorf("log lacks the recovery:\n%s", stderr.String())
	}
}
