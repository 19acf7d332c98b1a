package server_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/identity/identitytest"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"
)

// recordWithDeps records name@version whose provenance claims deps.
func recordWithDeps(t *testing.T, c catalogv1.CatalogServiceClient, name, content string, deps ...string) string {
	t.Helper()
	req := recordReq(name, "1", content)
	var rds []attest.ResourceDescriptor
	for _, d := range deps {
		rds = append(rds, attest.ResourceDescriptor{URI: "custody:" + d, Digest: map[string]string{"sha256": strings.TrimPrefix(d, "sha256:")}})
	}
	statement, err := attest.NewProvenance(attest.Artifact{Name: name, Version: "1", Digest: digestOf(content), Channel: "stable",
		BuilderID: "spiffe://custody.test/builder/ci", Dependencies: rds})
	if err != nil {
		t.Fatal(err)
	}
	if req.Envelope, err = attest.SignEnvelope(attest.PayloadType, statement, "k1", func([]byte) ([]byte, error) { return []byte("sig"), nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RecordArtifact(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	return digestOf(content)
}

// Every member of the trust domain reads lineage and audit entries; a
// caller from another trust domain is refused at the handshake.
func TestLineageAndEventsAuthorization(t *testing.T) {
	e := newEnv(t)
	base := recordWithDeps(t, e.client(t, "/service/publisher"), "base", "base")
	app := recordWithDeps(t, e.client(t, "/service/publisher"), "app", "app", base)
	for _, who := range []string{"/builder/ci", "/deployer/pipeline", "/auditor/audit", "/admin/ops", "/approver/alice", "/edge/dev", "/service/gatekeeper"} {
		c := e.client(t, who)
		if resp, err := c.ListEvents(t.Context(), &catalogv1.ListEventsRequest{SubjectDigest: app}); err != nil || len(resp.GetEntries()) != 1 {
			t.Errorf("%s ListEvents: %v, %v", who, resp, err)
		}
		resp, err := c.GetLineage(t.Context(), &catalogv1.GetLineageRequest{Node: app, Direction: catalogv1.LineageDirection_LINEAGE_DIRECTION_UP})
		if err != nil || len(resp.GetEdges()) != 1 || resp.GetEdges()[0].GetDependency() != base || resp.GetEdges()[0].GetArtifactName() != "app" {
			t.Errorf("%s GetLineage: %v, %v", who, resp, err)
		}
		path, err := c.GetLineagePath(t.Context(), &catalogv1.GetLineagePathRequest{From: base, To: app})
		if err != nil || len(path.GetEdges()) != 1 || !path.GetDownward() {
			t.Errorf("%s GetLineagePath: %v, %v", who, path, err)
		}
	}
	other := identitytest.New(t, "other.test")
	conn, err := rpc.Dial(e.addr, e.td.ID("/service/catalog"), other.Source(t, "/auditor/audit"), telemetry.Discard("client"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := catalogv1.NewCatalogServiceClient(conn).ListEvents(t.Context(), &catalogv1.ListEventsRequest{SubjectDigest: app}); status.Code(err) == codes.OK {
		t.Error("a caller from another trust domain listed events")
	}
}

// Hostile requests get InvalidArgument without echoing their input.
func TestLineageAndEventsRefuseBadInput(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, "/auditor/audit")
	ctx := t.Context()
	good := digestOf("x")
	huge := strings.Repeat("A", 1<<20)
	for name, call := range map[string]func() error{
		"events: no digest": func() error { _, err := c.ListEvents(ctx, &catalogv1.ListEventsRequest{}); return err },
		"events: huge digest": func() error {
			_, err := c.ListEvents(ctx, &catalogv1.ListEventsRequest{SubjectDigest: "sha256:" + huge})
			return err
		},
		"events: negative page": func() error {
			_, err := c.ListEvents(ctx, &catalogv1.ListEventsRequest{SubjectDigest: good, PageSize: -5})
			return err
		},
		"events: forged token": func() error {
			_, err := c.ListEvents(ctx, &catalogv1.ListEventsRequest{SubjectDigest: good, PageToken: "' OR 1=1"})
			return err
		},
		"events: huge token": func() error {
			_, err := c.ListEvents(ctx, &catalogv1.ListEventsRequest{SubjectDigest: good, PageToken: huge})
			return err
		},
		"lineage: no node": func() error {
			_, err := c.GetLineage(ctx, &catalogv1.GetLineageRequest{Direction: catalogv1.LineageDirection_LINEAGE_DIRECTION_UP})
			return err
		},
		"lineage: no direction": func() error { _, err := c.GetLineage(ctx, &catalogv1.GetLineageRequest{Node: good}); return err },
		"lineage: unknown direction": func() error {
			_, err := c.GetLineage(ctx, &catalogv1.GetLineageRequest{Node: good, Direction: 99})
			return err
		},
		"lineage: negative depth": func() error {
			_, err := c.GetLineage(ctx, &catalogv1.GetLineageRequest{Node: good, Direction: catalogv1.LineageDirection_LINEAGE_DIRECTION_DOWN, MaxDepth: -1})
			return err
		},
		"lineage: huge uri": func() error {
			_, err := c.GetLineage(ctx, &catalogv1.GetLineageRequest{Node: "uri:" + huge, Direction: catalogv1.LineageDirection_LINEAGE_DIRECTION_DOWN})
			return err
		},
		"lineage: sql": func() error {
			_, err := c.GetLineage(ctx, &catalogv1.GetLineageRequest{Node: "sha256:'; DROP TABLE lineage_edges; --", Direction: catalogv1.LineageDirection_LINEAGE_DIRECTION_UP})
			return err
		},
		"path: bad from": func() error {
			_, err := c.GetLineagePath(ctx, &catalogv1.GetLineagePathRequest{From: huge, To: good})
			return err
		},
		"path: bad to": func() error {
			_, err := c.GetLineagePath(ctx, &catalogv1.GetLineagePathRequest{From: good})
			return err
		},
	} {
		err := call()
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
		if len(st.Message()) > 400 {
			t.Errorf("%s: a message of %d bytes echoes the input", name, len(st.Message()))
		}
	}
	// A large depth is clamped, not refused.
	if _, err := c.GetLineage(ctx, &catalogv1.GetLineageRequest{Node: good, Direction: catalogv1.LineageDirection_LINEAGE_DIRECTION_UP, MaxDepth: 1 << 30}); err != nil {
		t.Errorf("max_depth above the bound: %v", err)
	}
}
