package broker_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custody-dev/custody/libs/attest"
	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/stopstate"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/libs/token"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/trustroot/edgekeys"
	"github.com/custody-dev/custody/libs/trustroot/trustroottest"
	"github.com/custody-dev/custody/services/cdn-broker/internal/broker"
	"github.com/custody-dev/custody/services/cdn-broker/internal/cdns"
)

// signingKey is an ECDSA P-256 key as the signer would hold it.
type signingKey struct {
	id      string
	priv    *ecdsa.PrivateKey
	purpose signerv1.KeyPurpose
	status  signerv1.KeyStatus
}

func newKey(t *testing.T, purpose signerv1.KeyPurpose) signingKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := attest.KeyID(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{id: id, priv: priv, purpose: purpose}
}

func (k signingKey) sign(t *testing.T, statement []byte) []byte {
	t.Helper()
	env, err := attest.SignEnvelope(attest.PayloadType, statement, k.id, func(pae []byte) ([]byte, error) {
		sum := sha256.Sum256(pae)
		return ecdsa.SignASN1(rand.Reader, k.priv, sum[:])
	})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// fakeSigner publishes public keys; it can be down.
type fakeSigner struct {
	signerv1.UnimplementedSignerServiceServer
	mu    sync.Mutex
	keys  []signingKey
	down  bool
	calls int
}

func (f *fakeSigner) ListPublicKeys(context.Context, *signerv1.ListPublicKeysRequest) (*signerv1.ListPublicKeysResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.down {
		return nil, status.Error(codes.Unavailable, "signer restarting")
	}
	resp := &signerv1.ListPublicKeysResponse{}
	for _, k := range f.keys {
		der, err := x509.MarshalPKIXPublicKey(&k.priv.PublicKey)
		if err != nil {
			return nil, err
		}
		resp.Keys = append(resp.Keys, &signerv1.PublicKey{KeyId: k.id, Purpose: k.purpose, PublicKeyDer: der, Status: k.status})
	}
	return resp, nil
}

func (f *fakeSigner) set(fn func(*fakeSigner)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

type fixture struct {
	td       *identitytest.TrustDomain
	signer   *fakeSigner
	decision signingKey
	artifact signingKey
	tokenPub ed25519.PublicKey
	now      time.Time
	tel      *telemetry.Telemetry
	addr     string
	gk       *fakeGatekeeper
	stops    *stopstate.Watcher
	events   *fakeEvents
	brk      *broker.Broker
	// unlisted is the broker's UnlistedKey counter.
	unlisted prometheus.Counter
}

// edgeKeys pins a trust root, version 1 issued at now, listing entries as
// its edge token keys.
func edgeKeys(t *testing.T, now time.Time, entries ...trustroot.EdgeTokenKey) *edgekeys.Keys {
	t.Helper()
	c := trustroottest.New(t, 1)
	r := c.Root(1, 1, now, nil, nil)
	r.EdgeTokenKeys = entries
	pinned, err := trustroot.Pin(c.Sign(t, r))
	if err != nil {
		t.Fatal(err)
	}
	return edgekeys.New(edgekeys.Config{Root: pinned, Logger: slog.New(slog.DiscardHandler)})
}

// fakeEvents records appended events, or fails while down.
type fakeEvents struct {
	mu     sync.Mutex
	down   bool
	events []loggedEvent
}

type loggedEvent struct {
	Type, Subject string
	Details       map[string]any
}

func (e *fakeEvents) Append(_ context.Context, typ, subject string, details []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.down {
		return errors.New("catalog down")
	}
	var d map[string]any
	if err := json.Unmarshal(details, &d); err != nil {
		return err
	}
	e.events = append(e.events, loggedEvent{typ, subject, d})
	return nil
}

// fakeGatekeeper serves a settable stop state, or Unavailable when down.
type fakeGatekeeper struct {
	gatekeeperv1.UnimplementedGatekeeperServiceServer
	mu    sync.Mutex
	state *gatekeeperv1.StopState
	down  bool
}

func (g *fakeGatekeeper) GetStopState(context.Context, *gatekeeperv1.GetStopStateRequest) (*gatekeeperv1.GetStopStateResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.down {
		return nil, status.Error(codes.Unavailable, "gatekeeper down")
	}
	return &gatekeeperv1.GetStopStateResponse{State: proto.Clone(g.state).(*gatekeeperv1.StopState)}, nil
}

// setState sets the gatekeeper's state and has the broker learn it.
func (f *fixture) setState(t *testing.T, st *gatekeeperv1.StopState) {
	t.Helper()
	f.gk.mu.Lock()
	f.gk.state = st
	f.gk.mu.Unlock()
	if err := f.stops.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
}

const digest = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func start(t *testing.T, cdnList ...*cdns.CDN) *fixture {
	t.Helper()
	return startWithKeys(t, nil, cdnList...)
}

// startWithKeys starts a broker signing edge tokens with keys; nil: one
// new key, valid from the start, whose public half is f.tokenPub.
func startWithKeys(t *testing.T, keys []broker.TokenKey, cdnList ...*cdns.CDN) *fixture {
	t.Helper()
	return startWith(t, keys, nil, cdnList...)
}

// startWith is startWithKeys with edit applied to the broker's
// configuration (nil: none) before it starts.
func startWith(t *testing.T, keys []broker.TokenKey, edit func(*fixture, *broker.Config), cdnList ...*cdns.CDN) *fixture {
	t.Helper()
	td := identitytest.New(t, "custody.test")
	f := &fixture{td: td, now: time.Unix(1_800_000_000, 0).UTC(), tel: telemetry.Discard("cdn-broker"),
		decision: newKey(t, signerv1.KeyPurpose_KEY_PURPOSE_DECISION), artifact: newKey(t, signerv1.KeyPurpose_KEY_PURPOSE_ARTIFACT)}
	f.signer = &fakeSigner{keys: []signingKey{f.artifact, f.decision}}
	signerAddr := serve(t, td, "/service/signer", rpc.Policy{
		rpc.Method(signerv1.SignerService_ServiceDesc, "ListPublicKeys"): {rpc.Member(td.TD)},
	}, func(s *rpc.Server) { signerv1.RegisterSignerServiceServer(s, f.signer) })
	conn, err := rpc.Dial(signerAddr, td.ID("/service/signer"), td.Source(t, "/service/cdn-broker"), f.tel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f.gk = &fakeGatekeeper{state: &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}}}
	gkAddr := serve(t, td, "/service/gatekeeper", rpc.Policy{
		rpc.Method(gatekeeperv1.GatekeeperService_ServiceDesc, "GetStopState"): {rpc.Member(td.TD)},
	}, func(s *rpc.Server) { gatekeeperv1.RegisterGatekeeperServiceServer(s, f.gk) })
	gkConn, err := rpc.Dial(gkAddr, td.ID("/service/gatekeeper"), td.Source(t, "/service/cdn-broker"), f.tel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gkConn.Close() })
	f.stops = stopstate.NewWatcher(stopstate.WatcherConfig{Gatekeeper: gatekeeperv1.NewGatekeeperServiceClient(gkConn), MaxAge: 3 * time.Second,
		Now: func() time.Time { return f.now }})
	if err := f.stops.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if keys == nil {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		f.tokenPub = pub
		keys = []broker.TokenKey{{Key: priv}}
	}
	f.events = &fakeEvents{}
	// The trust root lists every key the broker holds, from its valid-from.
	var listed []trustroot.EdgeTokenKey
	for _, k := range keys {
		var from *time.Time
		if !k.ValidFrom.IsZero() {
			from = &k.ValidFrom
		}
		listed = append(listed, trustroottest.EdgeTokenKey(t, k.Key.Public(), from, nil))
	}
	f.unlisted = prometheus.NewCounter(prometheus.CounterOpts{Name: "unlisted"})
	cfg := broker.Config{
		TokenKeys: keys, EdgeURLs: []string{"https://edge-a.example:8443/", "https://edge-b.example"}, CDNs: cdnList,
		TokenTTL: 5 * time.Minute, DecisionMaxAge: 10 * time.Minute, Gatekeeper: td.ID("/service/gatekeeper"),
		Signer: signerv1.NewSignerServiceClient(conn), Stops: f.stops, Logger: slog.New(slog.DiscardHandler), Metrics: f.tel.Metrics,
		Now: func() time.Time { return f.now }, Events: f.events,
		EdgeKeys: edgeKeys(t, f.now, listed...), UnlistedKey: f.unlisted,
	}
	if edit != nil {
		edit(f, &cfg)
	}
	b := broker.New(cfg)
	f.brk = b
	f.addr = serve(t, td, "/service/cdn-broker", broker.Policy(td.TD), func(s *rpc.Server) { cdnbrokerv1.RegisterCdnBrokerServiceServer(s, b) })
	return f
}

func serve(t *testing.T, td *identitytest.TrustDomain, id string, policy rpc.Policy, register func(*rpc.Server)) string {
	t.Helper()
	srv := rpc.NewServer(rpc.ServerConfig{Source: td.Source(t, id), TrustDomain: td.TD, Policy: policy,
		Logger: slog.New(slog.DiscardHandler), Telemetry: telemetry.Discard(id)})
	register(srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

func (f *fixture) client(t *testing.T, as string) cdnbrokerv1.CdnBrokerServiceClient {
	t.Helper()
	conn, err := rpc.Dial(f.addr, f.td.ID("/service/cdn-broker"), f.td.Source(t, as), telemetry.Discard("test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cdnbrokerv1.NewCdnBrokerServiceClient(conn)
}

// vsa returns a VSA as the gatekeeper writes it, adjusted by edit.
func (f *fixture) vsa(t *testing.T, edit func(*attest.Decision)) []byte {
	t.Helper()
	d := attest.Decision{
		VerifierID: f.td.ID("/service/gatekeeper").String(), Name: "app", Version: "1.0.0", Digest: digest,
		Environment: "prod", PolicyURI: "custody:policy/admission", PolicyDigest: digest, DecisionID: "dec-1",
		Passed: true, Time: f.now.Add(-time.Minute), Reasons: []string{},
	}
	if edit != nil {
		edit(&d)
	}
	st, err := attest.NewVSA(d)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestIssuesURLsForAFreshAllow(t *testing.T) {
	f := start(t)
	resp, err := f.client(t, "/deployer/alice").IssueDownloadUrl(t.Context(),
		&cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDigest() != digest || !resp.GetExpiresAt().AsTime().Equal(f.now.Add(5*time.Minute)) || len(resp.GetUrls()) != 2 {
		t.Fatalf("response %v", resp)
	}
	for i, host := range []string{"edge-a.example:8443", "edge-b.example"} {
		u, err := url.Parse(resp.GetUrls()[i])
		if err != nil {
			t.Fatal(err)
		}
		if u.Host != host || u.Path != "/v1/blobs/sha256/"+strings.TrimPrefix(digest, "sha256:") {
			t.Fatalf("URL %d = %s", i, u)
		}
		c, err := token.Verify(u.Query().Get("token"), map[string]ed25519.PublicKey{token.KeyID(f.tokenPub): f.tokenPub}, digest, f.now)
		if err != nil {
			t.Fatalf("URL %d token: %v", i, err)
		}
		if c.DecisionID != "dec-1" || !c.Expires.Equal(f.now.Add(5*time.Minute)) {
			t.Fatalf("claims %+v", c)
		}
		if _, err := token.Verify(u.Query().Get("token"), map[string]ed25519.PublicKey{token.KeyID(f.tokenPub): f.tokenPub}, digest, f.now.Add(6*time.Minute)); err == nil {
			t.Fatal("token still valid after its TTL")
		}
	}
	// Admins may fetch too.
	if _, err := f.client(t, "/admin/root").IssueDownloadUrl(t.Context(),
		&cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil))}); err != nil {
		t.Fatalf("admin: %v", err)
	}
}

func TestRefusesWithoutAValidAllow(t *testing.T) {
	f := start(t)
	unknown := newKey(t, signerv1.KeyPurpose_KEY_PURPOSE_DECISION)
	revoked := newKey(t, signerv1.KeyPurpose_KEY_PURPOSE_DECISION)
	revoked.status = signerv1.KeyStatus_KEY_STATUS_REVOKED
	f.signer.set(func(s *fakeSigner) { s.keys = append(s.keys, revoked) })
	good := f.decision.sign(t, f.vsa(t, nil))
	// Same signature, payload edited to another version.
	var env map[string]any
	if err := json.Unmarshal(good, &env); err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
	env["payload"] = base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(payload), "1.0.0", "6.6.6", 1)))
	tampered, _ := json.Marshal(env)
	provenance, err := attest.NewProvenance(attest.Artifact{Name: "app", Version: "1.0.0", Digest: digest, Channel: "prod",
		BuilderID: f.td.ID("/builder/ci").String(), StartedOn: f.now, FinishedOn: f.now})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		envelope []byte
		want     string
	}{
		{"deny decision", f.decision.sign(t, f.vsa(t, func(d *attest.Decision) { d.Passed = false })), "is a deny"},
		{"stale", f.decision.sign(t, f.vsa(t, func(d *attest.Decision) { d.Time = f.now.Add(-11 * time.Minute) })), "older than"},
		{"future", f.decision.sign(t, f.vsa(t, func(d *attest.Decision) { d.Time = f.now.Add(5 * time.Minute) })), "future"},
		{"other verifier", f.decision.sign(t, f.vsa(t, func(d *attest.Decision) { d.VerifierID = f.td.ID("/deployer/alice").String() })), "made by"},
		{"artifact key", f.artifact.sign(t, f.vsa(t, nil)), "decision record"},
		{"unknown key", unknown.sign(t, f.vsa(t, nil)), "decision record"},
		{"revoked key", revoked.sign(t, f.vsa(t, nil)), "decision record"},
		{"tampered", tampered, "does not verify"},
		{"provenance, not a decision", f.decision.sign(t, provenance), ""},
		{"garbage", []byte("{not json"), ""},
		{"empty", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.client(t, "/deployer/alice").IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: tc.envelope})
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want PermissionDenied mentioning %q", err, tc.want)
			}
			if testing.Verbose() {
				t.Log(status.Convert(err).Message())
			}
		})
	}
	if got := testutil.ToFloat64(f.tel.Metrics.SignatureFailures.WithLabelValues("decision")); got != 4 {
		t.Fatalf("decision signature failures counted %v, want 4", got)
	}
}

func TestOnlyDeployersAndAdmins(t *testing.T) {
	f := start(t)
	for _, as := range []string{"/builder/ci", "/approver/bob", "/service/gatekeeper"} {
		_, err := f.client(t, as).IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil))})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), as) {
			t.Fatalf("%s: %v, want PermissionDenied naming the caller", as, err)
		}
	}
}

func TestSignerDownAndKeyRotation(t *testing.T) {
	f := start(t)
	var err error
	c := f.client(t, "/deployer/alice")
	f.signer.set(func(s *fakeSigner) { s.down = true })
	_, err = c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil))})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "signer") {
		t.Fatalf("signer down before any key is known: %v, want Unavailable naming the signer", err)
	}
	f.signer.set(func(s *fakeSigner) { s.down = false })
	if _, err := c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil))}); err != nil {
		t.Fatal(err)
	}
	// A new decision key is picked up when an envelope names it, at most
	// once per refresh interval.
	rotated := newKey(t, signerv1.KeyPurpose_KEY_PURPOSE_DECISION)
	f.signer.set(func(s *fakeSigner) { s.keys = append(s.keys, rotated) })
	_, err = c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: rotated.sign(t, f.vsa(t, nil))})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("new key right after a fetch: %v, want PermissionDenied until the refresh interval passes", err)
	}
	f.now = f.now.Add(31 * time.Second)
	if err := f.stops.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: rotated.sign(t, f.vsa(t, nil))}); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	// Known keys keep working while the signer is down.
	f.signer.set(func(s *fakeSigner) { s.down = true })
	if _, err := c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: f.decision.sign(t, f.vsa(t, nil))}); err != nil {
		t.Fatalf("known key while signer down: %v", err)
	}
	calls := f.signer.calls
	for range 5 {
		_, _ = c.IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: newKey(t, signerv1.KeyPurpose_KEY_PURPOSE_DECISION).sign(t, f.vsa(t, nil))})
	}
	if f.signer.calls != calls {
		t.Fatalf("envelopes with junk key IDs caused %d key fetches", f.signer.calls-calls)
	}
}

// TestRefusesWhileAStopAppliesAndBeforeEpochs: no URL while the kill switch
// is on or the decision's environment is paused, none for a decision made
// before the latest kill switch, pause or key revocation, and Unavailable
// when the stop state cannot be learned.
func TestRefusesWhileAStopAppliesAndBeforeEpochs(t *testing.T) {
	f := start(t)
	c := f.client(t, "/deployer/prod")
	ctx := t.Context()
	decidedAt := f.now.Add(-time.Minute)
	env := f.decision.sign(t, f.vsa(t, nil)) // decided at f.now-1m, for prod
	issue := func() error {
		_, err := c.IssueDownloadUrl(ctx, &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: env})
		return err
	}
	if err := issue(); err != nil {
		t.Fatalf("no stop: %v", err)
	}
	ts := timestamppb.New
	tests := []struct {
		name  string
		state *gatekeeperv1.StopState
		want  codes.Code
		msg   string
	}{
		{"kill switch on", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{Active: true, Epoch: 1, EpochTime: ts(decidedAt.Add(-time.Hour)), Reason: "leak"}},
			codes.PermissionDenied, "kill switch is on"},
		{"kill switch lifted after the decision", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{Epoch: 1, EpochTime: ts(decidedAt.Add(time.Second))}},
			codes.PermissionDenied, "before the kill switch"},
		{"prod paused", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}, Pauses: []*gatekeeperv1.EnvironmentStop{
			{Environment: "prod", Stop: &gatekeeperv1.Stop{Active: true, Epoch: 1, EpochTime: ts(decidedAt.Add(-time.Hour))}}}},
			codes.PermissionDenied, "prod is paused"},
		{"prod resumed, paused after the decision", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}, Pauses: []*gatekeeperv1.EnvironmentStop{
			{Environment: "prod", Stop: &gatekeeperv1.Stop{Epoch: 2, EpochTime: ts(decidedAt.Add(time.Millisecond))}}}},
			codes.PermissionDenied, "before environment prod was paused"},
		{"staging paused", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}, Pauses: []*gatekeeperv1.EnvironmentStop{
			{Environment: "staging", Stop: &gatekeeperv1.Stop{Active: true, Epoch: 1, EpochTime: ts(f.now)}}}},
			codes.OK, ""},
		{"key revoked after the decision", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}, RevocationTime: ts(decidedAt.Add(time.Second))},
			codes.PermissionDenied, "before the key revocation"},
		{"key revoked before the decision", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}, RevocationTime: ts(decidedAt.Add(-time.Second))},
			codes.OK, ""},
		// An advisory import found the decision's digest affected in prod
		// after the decision (decision 0098).
		{"finding of its digest after the decision", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}, Findings: []*gatekeeperv1.FindingEpoch{
			{Digest: digest, Environment: "prod", EpochTime: ts(decidedAt.Add(time.Millisecond)), AdvisoryId: "GHSA-jf85-cpcp-j695"}}},
			codes.PermissionDenied, "advisory GHSA-jf85-cpcp-j695 was found to affect"},
		{"finding of its digest before the decision", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}, Findings: []*gatekeeperv1.FindingEpoch{
			{Digest: digest, Environment: "prod", EpochTime: ts(decidedAt.Add(-time.Millisecond)), AdvisoryId: "GHSA-jf85-cpcp-j695"}}},
			codes.OK, ""},
		{"finding of its digest in staging", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}, Findings: []*gatekeeperv1.FindingEpoch{
			{Digest: digest, Environment: "staging", EpochTime: ts(f.now), AdvisoryId: "GHSA-x"}}},
			codes.OK, ""},
		{"finding of another digest", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}, Findings: []*gatekeeperv1.FindingEpoch{
			{Digest: "sha256:" + strings.Repeat("0", 64), Environment: "prod", EpochTime: ts(f.now), AdvisoryId: "GHSA-x"}}},
			codes.OK, ""},
		{"findings overflowed after the decision", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}, FindingsOverflowTime: ts(decidedAt.Add(time.Second))},
			codes.PermissionDenied, "findings overflowed"},
		// The decision's artifact was revoked (decision 0105): no URL,
		// whether the revocation came after the decision or, with an
		// older decision, before it.
		{"its digest revoked after the decision", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}, Revoked: []*gatekeeperv1.RevokedArtifact{
			{Digest: digest, EpochTime: ts(decidedAt.Add(time.Second)), Reason: "INC-7", RevokedBy: "spiffe://custody.test/admin/ops", LogIndex: 12}}},
			codes.PermissionDenied, "was revoked at"},
		{"its digest revoked before the decision", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}, Revoked: []*gatekeeperv1.RevokedArtifact{
			{Digest: digest, EpochTime: ts(decidedAt.Add(-time.Hour)), Reason: "INC-7", LogIndex: 12}}},
			codes.PermissionDenied, "artifact.revoked log index 12"},
		{"another digest revoked", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}, Revoked: []*gatekeeperv1.RevokedArtifact{
			{Digest: "sha256:" + strings.Repeat("0", 64), EpochTime: ts(f.now), Reason: "x"}}},
			codes.OK, ""},
		{"revocations overflowed after the decision", &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}, RevokedOverflowTime: ts(decidedAt.Add(time.Second))},
			codes.PermissionDenied, "revocations overflowed"},
	}
	for _, tt := range tests {
		f.setState(t, tt.state)
		err := issue()
		if status.Code(err) != tt.want || !strings.Contains(status.Convert(err).Message(), tt.msg) {
			t.Errorf("%s: %v, want %v mentioning %q", tt.name, err, tt.want, tt.msg)
		}
	}

	// The gatekeeper goes away: the last answer serves for MaxAge, then
	// every request is Unavailable.
	f.setState(t, &gatekeeperv1.StopState{KillSwitch: &gatekeeperv1.Stop{}})
	f.gk.mu.Lock()
	f.gk.down = true
	f.gk.mu.Unlock()
	_ = f.stops.Poll(ctx)
	f.now = f.now.Add(4 * time.Second)
	if err := issue(); status.Code(err) != codes.Unavailable {
		t.Fatalf("stop state 4s old: %v, want Unavailable", err)
	}
}

// TestIssuanceIsLogged: every issuance is a token.issued event naming the
// decision and the deployer before its URLs are returned, and a log that
// cannot be written means no URL.
func TestIssuanceIsLogged(t *testing.T) {
	f := start(t)
	env := f.decision.sign(t, f.vsa(t, nil))
	first, err := f.client(t, "/deployer/alice").IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: env})
	if err != nil {
		t.Fatal(err)
	}
	want := []loggedEvent{{Type: "token.issued", Subject: digest, Details: map[string]any{
		"decision_id": "dec-1", "environment": "prod", "expires": f.now.Add(5 * time.Minute).UTC().Format(time.RFC3339),
		"requested_by": f.td.ID("/deployer/alice").String(), "edges": float64(2), "cdns": float64(len(first.GetCdnUrls())),
	}}}
	if diff := cmp.Diff(want, f.events.events); diff != "" {
		t.Errorf("logged (-want +got):\n%s", diff)
	}
	f.events.mu.Lock()
	f.events.down = true
	f.events.mu.Unlock()
	resp, err := f.client(t, "/deployer/alice").IssueDownloadUrl(t.Context(), &cdnbrokerv1.IssueDownloadUrlRequest{DecisionEnvelope: env})
	if status.Code(err) != codes.Unavailable || len(resp.GetUrls()) != 0 || !strings.Contains(err.Error(), "cannot be logged") {
		t.Fatalf("catalog down: %v %v, want Unavailable and no URL", resp, err)
	}
}
