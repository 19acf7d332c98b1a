package broker_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cdnbrokerv1 "github.com/custody-dev/custody/libs/gen/custody/cdnbroker/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
	"github.com/custody-dev/custody/services/cdn-broker/internal/broker"
	"github.com/custody-dev/custody/services/cdn-broker/internal/purges"
)

type okTarget struct{}

func (okTarget) Name() string                                { return "edge:a" }
func (okTarget) Purge(context.Context, string, string) error { return nil }

type nopLog struct{}

func (nopLog) Append(context.Context, string, string, []byte) error { return nil }

func startPurges(t *testing.T) (*identitytest.TrustDomain, string) {
	t.Helper()
	td := identitytest.New(t, "custody.test")
	m, err := purges.Open(purges.Config{Dir: t.TempDir(), Targets: []purges.Target{okTarget{}}, Log: nopLog{}})
	if err != nil {
		t.Fatal(err)
	}
	b := broker.New(broker.Config{Logger: slog.New(slog.DiscardHandler), Metrics: telemetry.Discard("cdn-broker").Metrics, Now: time.Now, Purges: m})
	return td, serve(t, td, "/service/cdn-broker", broker.Policy(td.TD), func(s *rpc.Server) { cdnbrokerv1.RegisterCdnBrokerServiceServer(s, b) })
}

func purgeClient(t *testing.T, td *identitytest.TrustDomain, addr, as string) cdnbrokerv1.CdnBrokerServiceClient {
	t.Helper()
	conn, err := rpc.Dial(addr, td.ID("/service/cdn-broker"), td.Source(t, as), telemetry.Discard("test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cdnbrokerv1.NewCdnBrokerServiceClient(conn)
}

// TestPurgeDigestsCallers: the publisher, signer, gatekeeper and admins may
// queue purges, each only for the reasons its duty causes; everyone else,
// edges and deployers included, is PermissionDenied, and only admins read
// the status.
func TestPurgeDigestsCallers(t *testing.T) {
	td, addr := startPurges(t)
	for _, tc := range []struct {
		caller, reason string
		want           codes.Code
	}{
		{"/service/publisher", "retention-deleted", codes.OK},
		{"/service/signer", "artifact-revoked", codes.PermissionDenied}, // the gatekeeper revokes artifacts
		{"/service/signer", "key-revoked", codes.OK},
		{"/service/gatekeeper", "kill-switch", codes.OK},
		{"/admin/alice", "admin", codes.OK},
		{"/admin/alice", "artifact-revoked", codes.OK},
		{"/service/publisher", "kill-switch", codes.PermissionDenied},
		{"/service/gatekeeper", "artifact-revoked", codes.OK},
		{"/service/signer", "admin", codes.PermissionDenied},
		{"/edge/dev", "admin", codes.PermissionDenied},
		{"/deployer/prod", "admin", codes.PermissionDenied},
		{"/builder/ci", "retention-deleted", codes.PermissionDenied},
		{"/auditor/eve", "admin", codes.PermissionDenied},
		{"/approver/bob", "admin", codes.PermissionDenied},
		{"/service/catalog", "artifact-revoked", codes.PermissionDenied},
		{"/service/cdn-broker", "admin", codes.PermissionDenied},
		{"/admin", "admin", codes.PermissionDenied}, // not under /admin/
		{"/service/publisher/x", "retention-deleted", codes.PermissionDenied},
		{"/admin/alice", "because", codes.InvalidArgument},
	} {
		t.Run(tc.caller+" "+tc.reason, func(t *testing.T) {
			_, err := purgeClient(t, td, addr, tc.caller).PurgeDigests(t.Context(),
				&cdnbrokerv1.PurgeDigestsRequest{Digests: []string{digest}, Reason: tc.reason, Reference: "ref-" + tc.reason})
			if status.Code(err) != tc.want {
				t.Fatalf("PurgeDigests as %s for %s = %v, want %s", tc.caller, tc.reason, err, tc.want)
			}
		})
	}
	for _, as := range []string{"/service/signer", "/edge/dev", "/deployer/prod"} {
		if _, err := purgeClient(t, td, addr, as).GetPurgeStatus(t.Context(), &cdnbrokerv1.GetPurgeStatusRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("GetPurgeStatus as %s = %v, want PermissionDenied", as, err)
		}
	}
	resp, err := purgeClient(t, td, addr, "/admin/alice").GetPurgeStatus(t.Context(), &cdnbrokerv1.GetPurgeStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetJobs()) != 5 { // the same digest under five references
		t.Fatalf("%d jobs, want 5: %v", len(resp.GetJobs()), resp)
	}
	for _, j := range resp.GetJobs() {
		if j.GetRequestedBy() == "" || len(j.GetTargets()) != 1 || j.GetTargets()[0].GetName() != "edge:a" {
			t.Fatalf("job %v", j)
		}
	}
}

// TestPurgeDigestsFromAnotherTrustDomain: an admin of another trust domain
// is refused at the TLS layer or by policy, never served.
func TestPurgeDigestsFromAnotherTrustDomain(t *testing.T) {
	_, addr := startPurges(t)
	other := identitytest.New(t, "evil.test")
	conn, err := rpc.Dial(addr, spiffeid.RequireFromPath(other.TD, "/service/cdn-broker"), other.Source(t, "/admin/alice"), telemetry.Discard("test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_, err = cdnbrokerv1.NewCdnBrokerServiceClient(conn).PurgeDigests(t.Context(), &cdnbrokerv1.PurgeDigestsRequest{Digests: []string{digest}, Reason: "admin", Reference: "x"})
	if status.Code(err) == codes.OK {
		t.Fatal("another trust domain's admin queued a purge")
	}
}

// TestPurgeDigestsHostileInput: malformed requests are InvalidArgument.
func TestPurgeDigestsHostileInput(t *testing.T) {
	td, addr := startPurges(t)
	c := purgeClient(t, td, addr, "/admin/alice")
	for name, req := range map[string]*cdnbrokerv1.PurgeDigestsRequest{
		"no digests":    {Reason: "admin", Reference: "r"},
		"bad digest":    {Digests: []string{"sha256:../../x"}, Reason: "admin", Reference: "r"},
		"bad reference": {Digests: []string{digest}, Reason: "admin", Reference: "a b"},
		"duplicates":    {Digests: []string{digest, digest}, Reason: "admin", Reference: "r"},
	} {
		if _, err := c.PurgeDigests(t.Context(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

// TestPurgeDigestsWithoutQueue: a broker started without a state directory
// says so instead of pretending to purge.
func TestPurgeDigestsWithoutQueue(t *testing.T) {
	td := identitytest.New(t, "custody.test")
	b := broker.New(broker.Config{Logger: slog.New(slog.DiscardHandler), Metrics: telemetry.Discard("cdn-broker").Metrics, Now: time.Now})
	addr := serve(t, td, "/service/cdn-broker", broker.Policy(td.TD), func(s *rpc.Server) { cdnbrokerv1.RegisterCdnBrokerServiceServer(s, b) })
	_, err := purgeClient(t, td, addr, "/admin/alice").PurgeDigests(t.Context(), &cdnbrokerv1.PurgeDigestsRequest{Digests: []string{digest}, Reason: "admin", Reference: "r"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v, want Unavailable", err)
	}
}
