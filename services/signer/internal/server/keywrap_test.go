package server_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/services/signer/internal/keys/pkcs11"
	"github.com/custody-dev/custody/services/signer/internal/keys/pkcs11/softhsmtest"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

// One SoftHSM2 token for this test binary: the module reads SOFTHSM2_CONF
// once per process.
var (
	tokenMade atomic.Bool
	token     = sync.OnceValues(func() (*softhsmtest.Token, error) {
		tokenMade.Store(true)
		return softhsmtest.New("custody-server-test")
	})
)

func TestMain(m *testing.M) {
	code := m.Run()
	if tokenMade.Load() {
		if tok, err := token(); err == nil {
			tok.Close()
		}
	}
	os.Exit(code)
}

type wrapFixture struct {
	td   *identitytest.TrustDomain
	addr string
}

// startKeyWrap serves KeyWrapService on KEK "publisher" in a SoftHSM2
// token, through the production interceptors and policy.
func startKeyWrap(t *testing.T) *wrapFixture {
	t.Helper()
	tok, err := token()
	if errors.Is(err, softhsmtest.ErrMissing) && os.Getenv(softhsmtest.RequireEnv) == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	b, err := pkcs11.Open(pkcs11.Config{ModulePath: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if _, err := b.EnsureWrappingKey(t.Context(), "publisher"); err != nil {
		t.Fatal(err)
	}
	// A KEK on the token that the service does not serve.
	if _, err := b.EnsureWrappingKey(t.Context(), "backup"); err != nil {
		t.Fatal(err)
	}
	td := identitytest.New(t, "custody.test")
	policy := server.Policy(td.TD)
	for m, r := range server.KeyWrapPolicy(td.TD) {
		policy[m] = r
	}
	srv := rpc.NewServer(rpc.ServerConfig{Source: td.Source(t, "/service/signer"), TrustDomain: td.TD,
		Policy: policy, Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard("signer")})
	signerv1.RegisterKeyWrapServiceServer(srv, server.NewKeyWrap(b, []string{"publisher"}, slog.New(slog.DiscardHandler)))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return &wrapFixture{td: td, addr: l.Addr().String()}
}

func (f *wrapFixture) client(t *testing.T, as string) signerv1.KeyWrapServiceClient {
	t.Helper()
	conn, err := rpc.Dial(f.addr, f.td.ID("/service/signer"), f.td.Source(t, as), telemetry.Discard("c"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return signerv1.NewKeyWrapServiceClient(conn)
}

func TestKeyWrapAuthorization(t *testing.T) {
	f := startKeyWrap(t)
	pub := f.client(t, "/service/publisher")
	dk := make([]byte, 32)
	rand.Read(dk)
	w, err := pub.WrapDataKey(t.Context(), &signerv1.WrapDataKeyRequest{KeyName: "publisher", DataKey: dk})
	if err != nil {
		t.Fatalf("WrapDataKey as the publisher: %v", err)
	}
	unwrap := &signerv1.UnwrapDataKeyRequest{KeyName: "publisher", Version: w.GetVersion(), Wrapped: w.GetWrapped()}
	calls := map[string]func(signerv1.KeyWrapServiceClient) error{
		"WrapDataKey": func(c signerv1.KeyWrapServiceClient) error {
			_, err := c.WrapDataKey(t.Context(), &signerv1.WrapDataKeyRequest{KeyName: "publisher", DataKey: dk})
			return err
		},
		"UnwrapDataKey": func(c signerv1.KeyWrapServiceClient) error {
			_, err := c.UnwrapDataKey(t.Context(), unwrap)
			return err
		},
		"RewrapDataKey": func(c signerv1.KeyWrapServiceClient) error {
			_, err := c.RewrapDataKey(t.Context(), &signerv1.RewrapDataKeyRequest{KeyName: "publisher", Version: w.GetVersion(), Wrapped: w.GetWrapped()})
			return err
		},
		"RotateWrappingKey": func(c signerv1.KeyWrapServiceClient) error {
			_, err := c.RotateWrappingKey(t.Context(), &signerv1.RotateWrappingKeyRequest{KeyName: "publisher"})
			return err
		},
		"DestroyWrappingKeyVersion": func(c signerv1.KeyWrapServiceClient) error {
			_, err := c.DestroyWrappingKeyVersion(t.Context(), &signerv1.DestroyWrappingKeyVersionRequest{KeyName: "publisher", Version: 99})
			return err
		},
	}
	allowed := map[string]map[string]bool{
		"/service/publisher": {"WrapDataKey": true, "UnwrapDataKey": true, "RewrapDataKey": true},
		"/admin/alice":       {"RotateWrappingKey": true, "DestroyWrappingKeyVersion": true},
	}
	for _, as := range []string{"/builder/ci", "/edge/eu-1", "/admin/alice", "/service/gatekeeper", "/service/catalog", "/service/edge", "/service/publisher-evil", "/service/publisher"} {
		c := f.client(t, as)
		for method, call := range calls {
			err := call(c)
			code := status.Code(err)
			if allowed[as][method] {
				if code == codes.PermissionDenied || code == codes.Unauthenticated {
					t.Errorf("%s as %s: %v, want allowed", method, as, err)
				}
				continue
			}
			if code != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "spiffe://custody.test"+as) {
				t.Errorf("%s as %s: %v, want PermissionDenied naming the caller", method, as, err)
			}
		}
	}
	// A caller of another trust domain is refused too.
	other := identitytest.New(t, "evil.test")
	conn, err := rpc.Dial(f.addr, f.td.ID("/service/signer"), other.Source(t, "/service/publisher"), telemetry.Discard("c"))
	if err == nil {
		_, err = signerv1.NewKeyWrapServiceClient(conn).UnwrapDataKey(t.Context(), unwrap)
		conn.Close()
	}
	if err == nil {
		t.Fatal("a publisher of another trust domain unwrapped a data key")
	}
}

func TestKeyWrapHostileRequests(t *testing.T) {
	f := startKeyWrap(t)
	pub := f.client(t, "/service/publisher")
	dk := make([]byte, 32)
	rand.Read(dk)
	w, err := pub.WrapDataKey(t.Context(), &signerv1.WrapDataKeyRequest{KeyName: "publisher", DataKey: dk})
	if err != nil {
		t.Fatal(err)
	}
	got, err := pub.UnwrapDataKey(t.Context(), &signerv1.UnwrapDataKeyRequest{KeyName: "publisher", Version: w.GetVersion(), Wrapped: w.GetWrapped()})
	if err != nil || !bytes.Equal(got.GetDataKey(), dk) {
		t.Fatalf("UnwrapDataKey = %x, %v", got.GetDataKey(), err)
	}
	flipped := bytes.Clone(w.GetWrapped())
	flipped[20] ^= 1
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"a KEK the signer does not serve", func() error {
			_, err := pub.WrapDataKey(t.Context(), &signerv1.WrapDataKeyRequest{KeyName: "backup", DataKey: dk})
			return err
		}, codes.NotFound},
		{"unwrap under a KEK the signer does not serve", func() error {
			_, err := pub.UnwrapDataKey(t.Context(), &signerv1.UnwrapDataKeyRequest{KeyName: "backup", Version: 1, Wrapped: w.GetWrapped()})
			return err
		}, codes.NotFound},
		{"a short data key", func() error {
			_, err := pub.WrapDataKey(t.Context(), &signerv1.WrapDataKeyRequest{KeyName: "publisher", DataKey: dk[:8]})
			return err
		}, codes.InvalidArgument},
		{"a huge data key", func() error {
			_, err := pub.WrapDataKey(t.Context(), &signerv1.WrapDataKeyRequest{KeyName: "publisher", DataKey: make([]byte, 1<<20)})
			return err
		}, codes.InvalidArgument},
		{"a tampered wrapped key", func() error {
			_, err := pub.UnwrapDataKey(t.Context(), &signerv1.UnwrapDataKeyRequest{KeyName: "publisher", Version: w.GetVersion(), Wrapped: flipped})
			return err
		}, codes.InvalidArgument},
		{"an empty wrapped key", func() error {
			_, err := pub.UnwrapDataKey(t.Context(), &signerv1.UnwrapDataKeyRequest{KeyName: "publisher", Version: 1})
			return err
		}, codes.InvalidArgument},
		{"a negative version", func() error {
			_, err := pub.UnwrapDataKey(t.Context(), &signerv1.UnwrapDataKeyRequest{KeyName: "publisher", Version: -1, Wrapped: w.GetWrapped()})
			return err
		}, codes.InvalidArgument},
		{"a version that does not exist", func() error {
			_, err := pub.RewrapDataKey(t.Context(), &signerv1.RewrapDataKeyRequest{KeyName: "publisher", Version: 1 << 30, Wrapped: w.GetWrapped()})
			return err
		}, codes.NotFound},
	}
	for _, tt := range tests {
		err := tt.call()
		if status.Code(err) != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if strings.Contains(status.Convert(err).Message(), string(dk)) {
			t.Errorf("%s: the error holds the data key", tt.name)
		}
	}
	admin := f.client(t, "/admin/alice")
	if _, err := admin.DestroyWrappingKeyVersion(t.Context(), &signerv1.DestroyWrappingKeyVersionRequest{KeyName: "publisher", Version: w.GetVersion()}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("destroy the only (newest) version: %v, want InvalidArgument", err)
	}
}
