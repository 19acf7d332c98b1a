package server_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
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
	"github.com/custody-dev/custody/services/signer/internal/audit"
	"github.com/custody-dev/custody/services/signer/internal/keys/soft"
	"github.com/custody-dev/custody/services/signer/internal/lifecycle"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

type lcFixture struct {
	td    *identitytest.TrustDomain
	addr  string
	store *soft.Store
	root  crypto.Signer
	sigs  *fakeSignatures
}

// fakeSignatures stands in for the catalog's RecordSignature: it keeps
// what the signer recorded, or fails with err.
type fakeSignatures struct {
	mu       sync.Mutex
	err      error
	recorded []string // name@version
	envs     [][]byte
}

func (f *fakeSignatures) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeSignatures) RecordSignature(_ context.Context, name, version string, envelope []byte) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	f.recorded = append(f.recorded, name+"@"+version)
	f.envs = append(f.envs, envelope)
	return int64(len(f.recorded) + 6), nil
}

// startLifecycle serves the signer and key APIs with a key lifecycle that
// publishes development trust roots itself.
func startLifecycle(t *testing.T) *lcFixture { return startLifecycleWith(t, true) }

// startLifecycleWith is startLifecycle, recording re-signatures in a fake
// catalog only if withCatalog (a signer without --catalog-addr otherwise).
func startLifecycleWith(t *testing.T, withCatalog bool) *lcFixture {
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
	sigs := &fakeSignatures{}
	if withCatalog {
		s.SetSignatures(sigs)
	}
	signerv1.RegisterSignerServiceServer(srv, s)
	signerv1.RegisterKeyServiceServer(srv, lifecycle.NewHandler(m))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return &lcFixture{td: td, addr: l.Addr().String(), store: store, root: root, sigs: sigs}
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
	// The catalog is down: nothing is recorded, and the admin is told to
	// retry.
	f.sigs.fail(fmt.Errorf("%w: catalog down", audit.ErrUnavailable))
	if _, err := adminSigner.ResignArtifact(ctx, &signerv1.ResignArtifactRequest{Envelope: signed.GetEnvelope()}); status.Code(err) != codes.Unavailable {
		t.Fatalf("ResignArtifact with the catalog down = %v, want Unavailable", err)
	}
	f.sigs.fail(fmt.Errorf("%w: no artifact app@1.0.0", audit.ErrRefused))
	if _, err := adminSigner.ResignArtifact(ctx, &signerv1.ResignArtifactRequest{Envelope: signed.GetEnvelope()}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "no artifact app@1.0.0") {
		t.Fatalf("ResignArtifact refused by the catalog = %v, want FailedPrecondition with the catalog's reason", err)
	}
	f.sigs.fail(nil)
	rs := must(adminSigner.ResignArtifact(ctx, &signerv1.ResignArtifactRequest{Envelope: signed.GetEnvelope()})).(*signerv1.ResignArtifactResponse)
	if rs.GetKeyId() != rot.GetKey().GetKeyId() || rs.GetPreviousKeyId() != signed.GetKeyId() {
		t.Fatalf("re-signed by %s from %s; want %s from %s", rs.GetKeyId(), rs.GetPreviousKeyId(), rot.GetKey().GetKeyId(), signed.GetKeyId())
	}
	// The signer recorded the new envelope in the catalog itself, under
	// the statement's name@version, and returns the entry's index.
	if len(f.sigs.recorded) != 1 || f.sigs.recorded[0] != "app@1.0.0" || !bytes.Equal(f.sigs.envs[0], rs.GetEnvelope()) || rs.GetLogIndex() != 7 {
		t.Fatalf("recorded %v (index %d), want the new envelope of app@1.0.0 at index 7", f.sigs.recorded, rs.GetLogIndex())
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

// TestResignArtifactNeedsCatalog: a signer that cannot record re-signatures
// refuses to make them, before signing anything.
func TestResignArtifactNeedsCatalog(t *testing.T) {
	f := startLifecycleWith(t, false)
	publisher, _ := f.dial(t, "/service/publisher")
	admin, adminKeys := f.dial(t, "/admin/ops")
	signed, err := publisher.SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "staging", Statement: provenance(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adminKeys.RotateKey(t.Context(), &signerv1.RotateKeyRequest{Name: "artifact"}); err != nil {
		t.Fatal(err)
	}
	_, err = admin.ResignArtifact(t.Context(), &signerv1.ResignArtifactRequest{Envelope: signed.GetEnvelope()})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--catalog-addr") {
		t.Fatalf("ResignArtifact without a catalog = %v, want FailedPrecondition naming --catalog-addr", err)
	}
}
