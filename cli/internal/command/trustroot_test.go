package command

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Execute(t.Context(), args, func(string) string { return "" }, &out, &errOut)
	return code, out.String(), errOut.String()
}

// ceremonySigner is a KeyService and SignerService that drafts from a
// template, accepts what chains from its latest version, and serves the
// versions it holds.
type ceremonySigner struct {
	signerv1.UnimplementedKeyServiceServer
	signerv1.UnimplementedSignerServiceServer

	mu      sync.Mutex
	draft   *trustroot.Root
	trusted *trustroot.Trusted
	roots   [][]byte
}

func (s *ceremonySigner) DraftTrustRoot(context.Context, *signerv1.DraftTrustRootRequest) (*signerv1.DraftTrustRootResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := jsonOf(s.draft)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &signerv1.DraftTrustRootResponse{Root: b}, nil
}

func (s *ceremonySigner) PublishTrustRoot(_ context.Context, req *signerv1.PublishTrustRootRequest) (*signerv1.PublishTrustRootResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.trusted == nil {
		s.trusted, err = trustroot.Pin(req.GetRoot())
	} else {
		err = s.trusted.Update(req.GetRoot(), time.Now())
	}
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	s.roots = append(s.roots, req.GetRoot())
	return &signerv1.PublishTrustRootResponse{Version: s.trusted.Version()}, nil
}

func (s *ceremonySigner) GetTrustRoot(context.Context, *signerv1.GetTrustRootRequest) (*signerv1.GetTrustRootResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.roots) == 0 {
		return &signerv1.GetTrustRootResponse{}, nil
	}
	return &signerv1.GetTrustRootResponse{Roots: s.roots[len(s.roots)-1:]}, nil
}

// jsonOf encodes a draft that may not validate yet (version 1 has no root
// keys until the ceremony adds them).
func jsonOf(r *trustroot.Root) ([]byte, error) {
	if err := r.Validate(); err == nil {
		return r.Marshal()
	}
	return json.Marshal(r)
}

// serveCeremonySigner serves s and returns the flags that reach it as the
// admin.
func serveCeremonySigner(t *testing.T, s *ceremonySigner) []string {
	t.Helper()
	td := identitytest.New(t, "custody.test")
	srv := rpc.NewServer(rpc.ServerConfig{
		Source: td.Source(t, "/service/signer"), TrustDomain: td.TD, Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard("test"),
		Policy: rpc.Policy{
			rpc.Method(signerv1.KeyService_ServiceDesc, "DraftTrustRoot"):   {rpc.Under{TrustDomain: td.TD, Prefix: "/admin"}},
			rpc.Method(signerv1.KeyService_ServiceDesc, "PublishTrustRoot"): {rpc.Under{TrustDomain: td.TD, Prefix: "/admin"}},
			rpc.Method(signerv1.SignerService_ServiceDesc, "GetTrustRoot"):  {rpc.Member(td.TD)},
		},
	})
	signerv1.RegisterKeyServiceServer(srv, s)
	signerv1.RegisterSignerServiceServer(srv, s)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	dir := t.TempDir()
	issued, err := td.CA.IssueSVID(td.ID("/admin/ops"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{identity.SVIDFile: issued.CertPEM, identity.SVIDKeyFile: issued.KeyPEM, identity.BundleFile: td.CA.CertPEM()} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return []string{"--trust-domain", "custody.test", "--svid-dir", dir, "--signer-addr", l.Addr().String()}
}

func TestTrustrootKeygen(t *testing.T) {
	dir := t.TempDir()
	for _, alg := range []string{attest.AlgECDSAP256, attest.AlgEd25519} {
		path := filepath.Join(dir, alg+".key")
		code, out, errOut := runCLI(t, "trustroot", "keygen", "--out", path, "--algorithm", alg)
		if code != ExitOK || !strings.Contains(out, "BEGIN PUBLIC KEY") || !strings.Contains(out, alg) {
			t.Fatalf("%s: exit %d, %q %q", alg, code, out, errOut)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: key file mode %v, %v; want 0600", alg, fi.Mode().Perm(), err)
		}
		b, _ := os.ReadFile(path)
		if _, err := trustroot.ParsePrivateKey(b); err != nil {
			t.Errorf("%s: %v", alg, err)
		}
		if code, _, errOut := runCLI(t, "trustroot", "keygen", "--out", path, "--algorithm", alg); code != ExitError || !strings.Contains(errOut, "refusing to overwrite") {
			t.Errorf("%s: second keygen: exit %d, %q", alg, code, errOut)
		}
	}
	if code, _, _ := runCLI(t, "trustroot", "keygen", "--out", filepath.Join(dir, "rsa.key"), "--algorithm", "rsa"); code != ExitError {
		t.Errorf("rsa: exit %d", code)
	}
}

// TestTrustrootCeremony runs version 1 and a root-key rotation to version
// 2 through keygen, draft, sign, publish and show.
func TestTrustrootCeremony(t *testing.T) {
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	for _, k := range []string{"a", "b", "c"} {
		code, out, errOut := runCLI(t, "trustroot", "keygen", "--out", path(k+".key"))
		if code != ExitOK {
			t.Fatalf("keygen %s: %q", k, errOut)
		}
		pub := out[strings.Index(out, "-----BEGIN"):]
		if err := os.WriteFile(path(k+".pub"), []byte(pub), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	artifact, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, vkey, err := tlog.GenerateKey("custody.test/log")
	if err != nil {
		t.Fatal(err)
	}
	s := &ceremonySigner{draft: &trustroot.Root{
		Type: trustroot.TypeV1, Version: 1,
		SigningKeys: []trustroot.SigningKey{trustroottest.SigningKey(t, &artifact.PublicKey, attest.PurposeArtifact, "artifact", 1, time.Now())},
		LogKeys:     []trustroot.LogKey{{Origin: "custody.test/log", VerifierKey: vkey}},
	}}
	conn := serveCeremonySigner(t, s)
	cmd := func(args ...string) []string { return append(append([]string{}, args...), conn...) }

	// Version 1: roots a and b, 2 of 2.
	if code, out, errOut := runCLI(t, cmd("trustroot", "draft", "-o", path("v1.json"), "--root-key", path("a.pub"), "--root-key", path("b.pub"), "--threshold", "2")...); code != ExitOK {
		t.Fatalf("draft v1: exit %d, %q %q", code, out, errOut)
	}
	code, out, errOut := runCLI(t, "trustroot", "sign", path("v1.json"), "--key", path("a.key"), "-o", path("v1.env"))
	for _, want := range []string{"trust root v1, expires", "root keys (2 of 2 must sign)", "artifact  1", "custody.test/log", "signatures: none"} {
		if code != ExitOK || !strings.Contains(out, want) {
			t.Errorf("sign v1 with a: exit %d, output %q %q lacks %q", code, out, errOut, want)
		}
	}
	if code, _, errOut := runCLI(t, "trustroot", "sign", path("v1.env"), "--key", path("c.key"), "-o", path("v1.env")); code != ExitError || !strings.Contains(errOut, "not one of its root keys") {
		t.Errorf("sign v1 with c (not a root key): exit %d, %q", code, errOut)
	}
	if code, out, _ := runCLI(t, "trustroot", "show", path("v1.env")); code != ExitOK || !strings.Contains(out, "threshold is NOT met") {
		t.Errorf("show half-signed v1: %q", out)
	}
	if code, out, errOut := runCLI(t, "trustroot", "sign", path("v1.env"), "--key", path("b.key"), "-o", path("v1.env")); code != ExitOK || !strings.Contains(out, "signatures: 1") {
		t.Fatalf("sign v1 with b: exit %d, %q %q", code, out, errOut)
	}
	if code, out, errOut := runCLI(t, cmd("trustroot", "publish", path("v1.env"))...); code != ExitOK || !strings.Contains(out, "published trust root v1") {
		t.Fatalf("publish v1: exit %d, %q %q", code, out, errOut)
	}

	// Version 2 rotates b out and c in: a and b (v1's threshold) and a
	// and c (v2's) sign.
	s.mu.Lock()
	v1, err := trustroot.Parse(s.trusted.Envelope())
	if err != nil {
		t.Fatal(err)
	}
	next := *v1
	next.Version = 2
	s.draft = &next
	s.mu.Unlock()
	if code, _, errOut := runCLI(t, cmd("trustroot", "draft", "-o", path("v2.json"), "--root-key", path("a.pub"), "--root-key", path("c.pub"))...); code != ExitOK {
		t.Fatalf("draft v2: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runCLI(t, "trustroot", "sign", path("v2.json"), "--key", path("b.key"), "-o", path("v2.env")); code != ExitError || !strings.Contains(errOut, "give the previous version") {
		t.Errorf("sign v2 with b without --previous: exit %d, %q", code, errOut)
	}
	for _, k := range []string{"a", "c"} {
		if code, _, errOut := runCLI(t, "trustroot", "sign", path("v2.json"), "--key", path(k+".key"), "-o", path("v2.json")); code != ExitOK {
			t.Fatalf("sign v2 with %s: %q", k, errOut)
		}
	}
	if code, _, errOut := runCLI(t, cmd("trustroot", "publish", path("v2.json"))...); code != ExitDenied || !strings.Contains(errOut, "is not signed by the root keys of v1") {
		t.Errorf("publish v2 without v1's threshold: exit %d, %q", code, errOut)
	}
	code, out, errOut = runCLI(t, "trustroot", "sign", path("v2.json"), "--key", path("b.key"), "--previous", path("v1.env"), "-o", path("v2.json"))
	if code != ExitOK || !strings.Contains(out, "changes from v1:") || !strings.Contains(out, "- root key") || !strings.Contains(out, "+ root key") {
		t.Fatalf("sign v2 with b and --previous: exit %d, %q %q", code, out, errOut)
	}
	if code, out, errOut := runCLI(t, cmd("trustroot", "publish", path("v2.json"))...); code != ExitOK || !strings.Contains(out, "published trust root v2") {
		t.Fatalf("publish v2: exit %d, %q %q", code, out, errOut)
	}
	if code, out, errOut := runCLI(t, cmd("trustroot", "show")...); code != ExitOK || !strings.Contains(out, "trust root v2") || !strings.Contains(out, "threshold is met") {
		t.Errorf("show the signer's latest: exit %d, %q %q", code, out, errOut)
	}
}
