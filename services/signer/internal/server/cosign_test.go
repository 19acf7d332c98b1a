package server_test

import (
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/signer/internal/cosign"
	"github.com/custody-dev/custody/services/signer/internal/keys/soft"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

// startCosigning serves a signer with checkpoint co-signing, through the
// production interceptors.
func startCosigning(t *testing.T) (td *identitytest.TrustDomain, addr string, c *cosign.Cosigner) {
	t.Helper()
	td = identitytest.New(t, "custody.test")
	store, err := soft.Open(filepath.Join(t.TempDir(), "keystore.json"), []byte("0123456789abcdef-passphrase"), true, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	names := server.Keys{Artifact: "artifact", Decision: "decision", Log: "log"}
	if err := server.EnsureKeys(t.Context(), store, names); err != nil {
		t.Fatal(err)
	}
	c, err = cosign.New(cosign.Config{Origin: "custody.test/log", Name: "custody.test/signer", Backend: store, KeyName: "log", StateDir: t.TempDir(), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	srv := rpc.NewServer(rpc.ServerConfig{Source: td.Source(t, "/service/signer"), TrustDomain: td.TD,
		Policy: server.Policy(td.TD), Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard("signer")})
	api := server.New(store, openLifecycle(t, store, names), slog.New(slog.DiscardHandler))
	api.SetCosigner(c)
	signerv1.RegisterSignerServiceServer(srv, api)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return td, l.Addr().String(), c
}

func TestCosignCheckpointAPI(t *testing.T) {
	td, addr, c := startCosigning(t)
	client := func(as string) signerv1.SignerServiceClient {
		conn, err := rpc.Dial(addr, td.ID("/service/signer"), td.Source(t, as), telemetry.Discard("c"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return signerv1.NewSignerServiceClient(conn)
	}
	skey, _, err := tlog.GenerateKey("custody.test/log")
	if err != nil {
		t.Fatal(err)
	}
	checkpoint := func(size uint64, hash []byte) []byte {
		b, err := tlog.SignCheckpoint(tlog.Checkpoint{Origin: "custody.test/log", Size: size, Hash: hash}, skey)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	leaf := rfc6962.DefaultHasher.HashLeaf([]byte("one"))

	// Only the catalog may call either RPC.
	for _, as := range []string{"/service/publisher", "/admin/ops", "/auditor/audit"} {
		_, err := client(as).GetCosignedCheckpoint(t.Context(), &signerv1.GetCosignedCheckpointRequest{Origin: "custody.test/log"})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("GetCosignedCheckpoint as %s: got %v, want PermissionDenied", as, err)
		}
		_, err = client(as).CosignCheckpoint(t.Context(), &signerv1.CosignCheckpointRequest{Checkpoint: checkpoint(1, leaf)})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("CosignCheckpoint as %s: got %v, want PermissionDenied", as, err)
		}
	}

	catalog := client("/service/catalog")
	got, err := catalog.GetCosignedCheckpoint(t.Context(), &signerv1.GetCosignedCheckpointRequest{Origin: "custody.test/log"})
	if err != nil || len(got.GetCheckpoint()) != 0 {
		t.Fatalf("GetCosignedCheckpoint before any = %v, %v; want empty", got, err)
	}
	resp, err := catalog.CosignCheckpoint(t.Context(), &signerv1.CosignCheckpointRequest{Checkpoint: checkpoint(1, leaf)})
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := c.VerifierKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tlog.OpenCosigned(resp.GetCheckpoint(), "custody.test/log", vkey); err != nil {
		t.Errorf("co-signed checkpoint: %v", err)
	}
	got, err = catalog.GetCosignedCheckpoint(t.Context(), &signerv1.GetCosignedCheckpointRequest{Origin: "custody.test/log"})
	if err != nil || string(got.GetCheckpoint()) != string(resp.GetCheckpoint()) {
		t.Errorf("GetCosignedCheckpoint = %v, %v; want the co-signed checkpoint", got, err)
	}

	tests := []struct {
		name string
		req  *signerv1.CosignCheckpointRequest
		code codes.Code
		want string
	}{
		{"fork", &signerv1.CosignCheckpointRequest{Checkpoint: checkpoint(1, rfc6962.DefaultHasher.HashLeaf([]byte("two"))), FromSize: 1}, codes.FailedPrecondition, "forked"},
		{"stale base", &signerv1.CosignCheckpointRequest{Checkpoint: checkpoint(1, leaf)}, codes.FailedPrecondition, "last co-signed size 1"},
		{"negative from size", &signerv1.CosignCheckpointRequest{Checkpoint: checkpoint(1, leaf), FromSize: -1}, codes.InvalidArgument, "from_size"},
	}
	for _, tt := range tests {
		_, err := catalog.CosignCheckpoint(t.Context(), tt.req)
		if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.want) {
			t.Errorf("%s: got %v, want %s mentioning %q", tt.name, err, tt.code, tt.want)
		}
	}
	if _, err := catalog.GetCosignedCheckpoint(t.Context(), &signerv1.GetCosignedCheckpointRequest{Origin: "other.test/log"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetCosignedCheckpoint(other log): got %v, want NotFound", err)
	}
}
