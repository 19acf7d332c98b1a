package server_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/custody-dev/custody/libs/attest"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/services/signer/internal/keys/soft"
	"github.com/custody-dev/custody/services/signer/internal/lifecycle"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

type lcFixture struct {
	td    *identitytest.TrustDomain
	addr  string
	store *soft.Store
	root  crypto.Signer
}

// startLifecycle serves the signer and key APIs with a key lifecycle that
// publishes development trust roots itself.
func startLifecycle(t *testing.T) *lcFixture {
	t.Helper()
	td := identitytest.New(t, "custody.test")
	store, err := soft.Open(filepath.Join(t.TempDir(), "keystore.json"), []byte("0123456789abcdef-passphrase"), true, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	names := server.Keys{Artifact: "artifact", Decision: "decision"}
	if err := server.EnsureKeys(t.Context(), store, names); err != nil {
		t.Fatal(err)
	}
	root, err := trustroot.GenerateKey(attest.AlgEd25519)
	if err != nil {
		t.Fatal(err)
	}
	m, err := lifecycle.Open(lifecycle.Config{Backend: store, ArtifactKey: "artifact", DecisionKey: "decision", Dir: t.TempDir(),
		DevRootKeys: []crypto.Signer{root}, DevThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.EnsureRoot(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := rpc.NewServer(rpc.ServerConfig{Source: td.Source(t, "/service/signer"), TrustDomain: td.TD,
		Policy: server.Policy(td.TD), Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard("signer")})
	s := server.New(store, m, slog.New(slog.DiscardHandler))
	signerv1.RegisterSignerServiceServer(srv, s)
	signerv1.RegisterKeyServiceServer(srv, lifecycle.NewHandler(m))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return &lcFixture{td: td, addr: l.Addr().String(), store: store, root: root}
}

func (f *lcFixture) dial(t *testing.T, as string) (signerv1.SignerServiceClient, signerv1.KeyServiceClient) {
	t.Helper()
	conn, err := rpc.Dial(f.addr, f.td.ID("/service/signer"), f.td.Source(t, as), telemetry.Discard("c"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return signerv1.NewSignerServiceClient(conn), signerv1.NewKeyServiceClient(conn)
}

// TestLifecycleRPCs: rotation, re-signing and revocation through the API;
// no response of any of them carries private key material, the back end's
// or the root keys'.
func TestLifecycleRPCs(t *testing.T) {
	f := startLifecycle(t)
	_, adminKeys := f.dial(t, "/admin/ops")
	publisher, _ := f.dial(t, "/service/publisher")
	gatekeeper, _ := f.dial(t, "/service/gatekeeper")
	adminSigner, _ := f.dial(t, "/admin/ops")
	auditor, _ := f.dial(t, "/auditor/audit")
	ctx := t.Context()

	var responses []proto.Message
	must := func(m proto.Message, err error) proto.Message {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		responses = append(responses, m)
		return m
	}
	signed := must(publisher.SignArtifact(ctx, &signerv1.SignArtifactRequest{Channel: "staging", Statement: provenance(t)})).(*signerv1.SignArtifactResponse)
	must(gatekeeper.SignDecision(ctx, &signerv1.SignDecisionRequest{Statement: vsa(t)}))
	if _, err := adminSigner.ResignArtifact(ctx, &signerv1.ResignArtifactRequest{Envelope: signed.GetEnvelope()}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("ResignArtifact by the current version = %v, want FailedPrecondition", err)
	}
	rot := must(adminKeys.RotateKey(ctx, &signerv1.RotateKeyRequest{Name: "artifact"})).(*signerv1.RotateKeyResponse)
	if rot.GetKey().GetVersion() != 2 || rot.GetTrustRootVersion() != 2 || rot.GetKey().GetStatus() != signerv1.KeyStatus_KEY_STATUS_CURRENT {
		t.Fatalf("RotateKey = %v", rot)
	}
	rs := must(adminSigner.ResignArtifact(ctx, &signerv1.ResignArtifactRequest{Envelope: signed.GetEnvelope()})).(*signerv1.ResignArtifactResponse)
	if rs.GetKeyId() != rot.GetKey().GetKeyId() || rs.GetPreviousKeyId() != signed.GetKeyId() {
		t.Fatalf("re-signed by %s from %s; want %s from %s", rs.GetKeyId(), rs.GetPreviousKeyId(), rot.GetKey().GetKeyId(), signed.GetKeyId())
	}
	rev := must(adminKeys.RevokeKeyVersion(ctx, &signerv1.RevokeKeyVersionRequest{Name: "artifact", Version: 1, Reason: "test"})).(*signerv1.RevokeKeyVersionResponse)
	if rev.GetKey().GetStatus() != signerv1.KeyStatus_KEY_STATUS_REVOKED || rev.GetKey().GetRevokedAt() == nil {
		t.Fatalf("RevokeKeyVersion = %v", rev)
	}
	if _, err := adminKeys.RevokeKeyVersion(ctx, &signerv1.RevokeKeyVersionRequest{Name: "artifact", Version: 2}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("revoke without a reason = %v, want InvalidArgument", err)
	}
	must(adminKeys.ListKeys(ctx, &signerv1.ListKeysRequest{}))
	must(adminKeys.DraftTrustRoot(ctx, &signerv1.DraftTrustRootRequest{}))
	pub := must(auditor.ListPublicKeys(ctx, &signerv1.ListPublicKeysRequest{})).(*signerv1.ListPublicKeysResponse)
	roots := must(auditor.GetTrustRoot(ctx, &signerv1.GetTrustRootRequest{AfterVersion: 1})).(*signerv1.GetTrustRootResponse)
	if len(roots.GetRoots()) != 2 {
		t.Fatalf("%d roots after version 1, want 2 (rotation, revocation)", len(roots.GetRoots()))
	}
	revoked := false
	for _, k := range pub.GetKeys() {
		revoked = revoked || k.GetKeyId() == signed.GetKeyId() && k.GetStatus() == signerv1.KeyStatus_KEY_STATUS_REVOKED
	}
	if !revoked {
		t.Fatal("ListPublicKeys does not report the revocation")
	}
	// Signing goes on with version 2.
	again := must(publisher.SignArtifact(ctx, &signerv1.SignArtifactRequest{Channel: "staging", Statement: provenance(t)})).(*signerv1.SignArtifactResponse)
	if again.GetKeyId() != rot.GetKey().GetKeyId() {
		t.Fatalf("signed by %s after the revocation, want version 2", again.GetKeyId())
	}

	var secrets [][]byte
	for _, k := range soft.PrivateKeysForTest(f.store) {
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		secrets = append(secrets, der, k.(*ecdsa.PrivateKey).D.Bytes())
	}
	rootDER, _ := x509.MarshalPKCS8PrivateKey(f.root)
	secrets = append(secrets, rootDER, f.root.(ed25519.PrivateKey).Seed())
	for _, r := range responses {
		b, _ := proto.Marshal(r)
		for _, s := range secrets {
			if bytes.Contains(b, s) {
				t.Fatalf("%T contains private key material", r)
			}
		}
	}
}

// Only admins manage keys and re-sign.
func TestLifecycleAuthorization(t *testing.T) {
	f := startLifecycle(t)
	for _, as := range []string{"/builder/ci", "/approver/alice", "/service/publisher", "/deployer/pipeline", "/auditor/audit"} {
		signer, keysAPI := f.dial(t, as)
		if _, err := keysAPI.RotateKey(t.Context(), &signerv1.RotateKeyRequest{Name: "artifact"}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s RotateKey: %v, want PermissionDenied", as, err)
		}
		if _, err := keysAPI.ListKeys(t.Context(), &signerv1.ListKeysRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s ListKeys: %v, want PermissionDenied", as, err)
		}
		if _, err := signer.ResignArtifact(t.Context(), &signerv1.ResignArtifactRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s ResignArtifact: %v, want PermissionDenied", as, err)
		}
	}
}
