package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
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
	"github.com/custody-dev/custody/services/signer/internal/keys"
	"github.com/custody-dev/custody/services/signer/internal/keys/soft"
	"github.com/custody-dev/custody/services/signer/internal/lifecycle"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

const digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

type fixture struct {
	td    *identitytest.TrustDomain
	addr  string
	store *soft.Store
	path  string
}

// openLifecycle is a key lifecycle with no trust root published: the newest
// version of each key signs.
func openLifecycle(t *testing.T, b keys.Backend, names server.Keys) *lifecycle.Manager {
	t.Helper()
	m, err := lifecycle.Open(lifecycle.Config{Backend: b, ArtifactKey: names.Artifact, DecisionKey: names.Decision, BackupKey: names.Backup, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func start(t *testing.T) *fixture { return startWith(t, nil) }

// startWith serves the signer API with approvals a (nil: none).
func startWith(t *testing.T, a server.Approvals) *fixture {
	t.Helper()
	td := identitytest.New(t, "custody.test")
	path := filepath.Join(t.TempDir(), "keystore.json")
	store, err := soft.Open(path, []byte("0123456789abcdef-passphrase"), true, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	srv := rpc.NewServer(rpc.ServerConfig{Source: td.Source(t, "/service/signer"), TrustDomain: td.TD,
		Policy: server.Policy(td.TD), Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard("signer")})
	names := server.Keys{Artifact: "artifact", Decision: "decision", Backup: "backup"}
	if err := server.EnsureKeys(t.Context(), store, names); err != nil {
		t.Fatal(err)
	}
	s := server.New(store, openLifecycle(t, store, names), slog.New(slog.DiscardHandler))
	if a != nil {
		s.SetApprovals(a)
	}
	signerv1.RegisterSignerServiceServer(srv, s)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return &fixture{td: td, addr: l.Addr().String(), store: store, path: path}
}

func (f *fixture) client(t *testing.T, as string) signerv1.SignerServiceClient {
	t.Helper()
	conn, err := rpc.Dial(f.addr, f.td.ID("/service/signer"), f.td.Source(t, as), telemetry.Discard("c"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return signerv1.NewSignerServiceClient(conn)
}

func provenance(t *testing.T) []byte {
	b, err := attest.NewProvenance(attest.Artifact{Name: "app", Version: "1.0.0", Digest: digest, Channel: "staging", BuilderID: "spiffe://custody.test/builder/ci"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func vsa(t *testing.T) []byte {
	b, err := attest.NewVSA(attest.Decision{VerifierID: "spiffe://custody.test/service/gatekeeper", Name: "app", Version: "1.0.0",
		Digest: digest, Environment: "staging", PolicyURI: "custody:policy/admission", PolicyDigest: digest, DecisionID: "d1", Passed: true, Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func publicKeys(t *testing.T, c signerv1.SignerServiceClient) []attest.Key {
	resp, err := c.ListPublicKeys(t.Context(), &signerv1.ListPublicKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []attest.Key
	for _, k := range resp.GetKeys() {
		pub, alg, err := attest.ParsePublicKey(k.GetPublicKeyDer())
		if err != nil {
			t.Fatal(err)
		}
		purpose := map[signerv1.KeyPurpose]string{signerv1.KeyPurpose_KEY_PURPOSE_ARTIFACT: attest.PurposeArtifact, signerv1.KeyPurpose_KEY_PURPOSE_DECISION: attest.PurposeDecision,
			signerv1.KeyPurpose_KEY_PURPOSE_BACKUP: attest.PurposeBackup}[k.GetPurpose()]
		keys = append(keys, attest.Key{ID: k.GetKeyId(), Purpose: purpose, Algorithm: alg, Public: pub})
	}
	return keys
}

func TestSignArtifactAndDecisionVerifyWithPublishedKeys(t *testing.T) {
	f := start(t)
	keys := publicKeys(t, f.client(t, "/auditor/audit"))
	art, err := f.client(t, "/service/publisher").SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "staging", Statement: provenance(t)})
	if err != nil {
		t.Fatal(err)
	}
	env, err := attest.ParseEnvelope(art.GetEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	if id, err := env.Verify(keys, attest.PurposeArtifact); err != nil || id != art.GetKeyId() {
		t.Fatalf("artifact envelope: %q %v", id, err)
	}
	if _, err := env.Verify(keys, attest.PurposeDecision); err == nil {
		t.Fatal("artifact envelope verifies as a decision")
	}
	dec, err := f.client(t, "/service/gatekeeper").SignDecision(t.Context(), &signerv1.SignDecisionRequest{Statement: vsa(t)})
	if err != nil {
		t.Fatal(err)
	}
	denv, _ := attest.ParseEnvelope(dec.GetEnvelope())
	if _, err := denv.Verify(keys, attest.PurposeDecision); err != nil {
		t.Fatalf("decision envelope: %v", err)
	}
}

func TestAuthorization(t *testing.T) {
	f := start(t)
	tests := []struct {
		as   string
		call func(signerv1.SignerServiceClient) error
		want codes.Code
	}{
		{"/builder/ci", func(c signerv1.SignerServiceClient) error {
			_, err := c.SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "staging", Statement: provenance(t)})
			return err
		}, codes.PermissionDenied},
		{"/service/gatekeeper", func(c signerv1.SignerServiceClient) error {
			_, err := c.SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "staging", Statement: provenance(t)})
			return err
		}, codes.PermissionDenied},
		{"/service/publisher", func(c signerv1.SignerServiceClient) error {
			_, err := c.SignDecision(t.Context(), &signerv1.SignDecisionRequest{Statement: vsa(t)})
			return err
		}, codes.PermissionDenied},
		{"/deployer/pipeline", func(c signerv1.SignerServiceClient) error {
			_, err := c.ListPublicKeys(t.Context(), &signerv1.ListPublicKeysRequest{})
			return err
		}, codes.OK},
	}
	for _, tt := range tests {
		err := tt.call(f.client(t, tt.as))
		if got := status.Code(err); got != tt.want {
			t.Errorf("as %s: %v, want %v", tt.as, err, tt.want)
		}
		if tt.want == codes.PermissionDenied && !strings.Contains(status.Convert(err).Message(), "spiffe://custody.test"+tt.as) {
			t.Errorf("as %s: denial %q does not name the caller", tt.as, status.Convert(err).Message())
		}
	}
}

func TestRejectsBadStatements(t *testing.T) {
	f := start(t)
	pub := f.client(t, "/service/publisher")
	for name, req := range map[string]*signerv1.SignArtifactRequest{
		"not json":        {Channel: "staging", Statement: []byte("{")},
		"vsa as artifact": {Channel: "staging", Statement: vsa(t)},
		"other channel":   {Channel: "prod", Statement: provenance(t)},
		"no channel":      {Statement: provenance(t)},
	} {
		if _, err := pub.SignArtifact(t.Context(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	gk := f.client(t, "/service/gatekeeper")
	if _, err := gk.SignDecision(t.Context(), &signerv1.SignDecisionRequest{Statement: provenance(t)}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("provenance as decision: %v, want InvalidArgument", err)
	}
}

// No response of any RPC carries private key material.
func TestNoPrivateMaterialInResponses(t *testing.T) {
	f := start(t)
	var secrets [][]byte
	privs := soft.PrivateKeysForTest(f.store)
	if len(privs) != 3 {
		t.Fatalf("%d keys, want 3 (artifact, decision, backup)", len(privs))
	}
	for _, k := range privs {
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		secrets = append(secrets, der, k.(*ecdsa.PrivateKey).D.Bytes())
	}
	var responses []proto.Message
	r1, err := f.client(t, "/auditor/audit").ListPublicKeys(t.Context(), &signerv1.ListPublicKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := f.client(t, "/service/publisher").SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "staging", Statement: provenance(t)})
	if err != nil {
		t.Fatal(err)
	}
	r3, err := f.client(t, "/service/gatekeeper").SignDecision(t.Context(), &signerv1.SignDecisionRequest{Statement: vsa(t)})
	if err != nil {
		t.Fatal(err)
	}
	responses = append(responses, r1, r2, r3)
	for _, r := range responses {
		b, _ := proto.Marshal(r)
		for _, s := range secrets {
			if bytes.Contains(b, s) {
				t.Fatalf("%T contains private key material", r)
			}
		}
	}
}

// flaky makes a back end unavailable on demand, as a sealed Vault or a
// missing HSM token does.
type flaky struct {
	keys.Backend
	down atomic.Bool
}

func (f *flaky) err() error {
	return fmt.Errorf("%w: vault at http://127.0.0.1:1 is sealed: unseal it", keys.ErrUnavailable)
}

func (f *flaky) Versions(ctx context.Context, name string) ([]keys.Version, error) {
	if f.down.Load() {
		return nil, f.err()
	}
	return f.Backend.Versions(ctx, name)
}

func (f *flaky) Sign(ctx context.Context, name string, v int, m []byte) ([]byte, error) {
	if f.down.Load() {
		return nil, f.err()
	}
	return f.Backend.Sign(ctx, name, v, m)
}

func TestBackendDownFailsClosedAndRecovers(t *testing.T) {
	td := identitytest.New(t, "custody.test")
	store, err := soft.Open(filepath.Join(t.TempDir(), "k.json"), []byte("0123456789abcdef-passphrase"), true, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	names := server.Keys{Artifact: "artifact", Decision: "decision", Backup: "backup"}
	if err := server.EnsureKeys(t.Context(), store, names); err != nil {
		t.Fatal(err)
	}
	b := &flaky{Backend: store}
	b.down.Store(true) // down from the start: the signer still starts
	srv := rpc.NewServer(rpc.ServerConfig{Source: td.Source(t, "/service/signer"), TrustDomain: td.TD,
		Policy: server.Policy(td.TD), Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard("signer")})
	signerv1.RegisterSignerServiceServer(srv, server.New(b, openLifecycle(t, b, names), slog.New(slog.DiscardHandler)))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	f := &fixture{td: td, addr: l.Addr().String()}
	pub := f.client(t, "/service/publisher")
	_, err = pub.SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "staging", Statement: provenance(t)})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "sealed") || !strings.Contains(err.Error(), "artifact") {
		t.Fatalf("sign with the back end down: %v, want Unavailable naming the cause and the key", err)
	}
	if _, err := f.client(t, "/auditor/audit").ListPublicKeys(t.Context(), &signerv1.ListPublicKeysRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("list keys with the back end down: %v, want Unavailable", err)
	}
	b.down.Store(false)
	if _, err := pub.SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "staging", Statement: provenance(t)}); err != nil {
		t.Fatalf("sign after the back end returned: %v", err)
	}
}
