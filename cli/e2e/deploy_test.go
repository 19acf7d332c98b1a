package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	gatekeeperv1 "github.com/custody-dev/custody/libs/gen/custody/gatekeeper/v1"
	"github.com/custody-dev/custody/libs/identity"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/libs/telemetry"

	"github.com/custody-dev/custody/cli/internal/devstack"
)

// connAsService dials service with the SVID of one of the stack's own
// services (a hostile service calling what it may not).
func (s *stack) connAsService(as, service string) *grpc.ClientConn {
	s.t.Helper()
	td := spiffeid.RequireTrustDomainFromString(s.info.TrustDomain)
	src, err := identity.OpenFiles(devstack.Layout{Dir: s.dir}.SVIDDir(as), td, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	c, err := rpc.Dial(s.info.Services[service]["grpc"], devstack.ServerID(td, service), src, telemetry.Discard("e2e"))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

// TestDeployments on the real dev stack: a deployment is recorded after a
// verified fetch (fetch --deploy) and with deploy record under a saved
// decision; the catalog then finds the artifact by deployed environment
// and shows the deployment in its lineage. Deployments under a decision for
// another environment, by identities that are not deployers, and written
// to the catalog directly are refused.
func TestDeployments(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	ctx := t.Context()
	src := randomFile(t, work, "svc", 4<<10)
	digest := digestOf(s.mustCustody("publish", src, "--name", "svc", "--version", "1.0.0", "--channel", "staging"))
	s.mustCustody("publish", randomFile(t, work, "svc2", 1<<10), "--name", "svc", "--version", "2.0.0", "--channel", "staging")

	dst := filepath.Join(work, "svc.out")
	out := s.mustCustody("fetch", "svc@1.0.0", "--env", "staging", "-o", dst, "--deploy")
	sameFile(t, src, dst)
	if !strings.Contains(out, "recorded deployment of svc@1.0.0 ("+digest+") to staging") {
		t.Errorf("fetch --deploy:\n%s", out)
	}

	decision := filepath.Join(work, "decision.json")
	out = s.mustCustody("admit", "svc@1.0.0", "--env", "dev", "-o", decision, "--json")
	var adm struct {
		Decision, Digest string
		Reasons          []string
		Signed           bool
		DecisionFile     string `json:"decision_file"`
	}
	if err := json.Unmarshal([]byte(out), &adm); err != nil || adm.Decision != "allow" || adm.Digest != digest || !adm.Signed ||
		adm.DecisionFile != decision || !slices.ContainsFunc(adm.Reasons, func(r string) bool { return strings.Contains(r, "included in the checkpoint") }) {
		t.Errorf("admit --json -o: %+v (%v)\n%s", adm, err, out)
	}
	out = s.mustCustody("deploy", "record", "svc@1.0.0", "--env", "dev", "--decision", decision, "--json")
	var d struct {
		Name, Version, Digest, Environment string
		DecisionID                         string `json:"decision_id"`
		LogIndex                           int64  `json:"log_index"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil || d.Digest != digest || d.Environment != "dev" || d.DecisionID == "" || d.LogIndex <= 0 {
		t.Errorf("deploy record --json: %+v (%v)\n%s", d, err, out)
	}

	// Hostile: the dev decision for staging, for another version, a
	// tampered record, no decision at all.
	if out, code := s.custody("deploy", "record", "svc@1.0.0", "--env", "staging", "--decision", decision); code != 1 || !strings.Contains(out, "not \"staging\"") {
		t.Errorf("decision for dev used for staging: exit %d\n%s", code, out)
	}
	if out, code := s.custody("deploy", "record", "svc@2.0.0", "--env", "dev", "--decision", decision); code != 1 || !strings.Contains(out, "refused") {
		t.Errorf("decision for 1.0.0 used for 2.0.0: exit %d\n%s", code, out)
	}
	b, err := os.ReadFile(decision)
	if err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(work, "tampered.json")
	if err := os.WriteFile(tampered, []byte(strings.Replace(string(b), `"payload":"`, `"payload":"e`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := s.custody("deploy", "record", "svc@1.0.0", "--env", "dev", "--decision", tampered); code != 1 {
		t.Errorf("tampered decision: exit %d\n%s", code, out)
	}
	req := &gatekeeperv1.RecordDeploymentRequest{Name: "svc", Version: "1.0.0", Environment: "dev", DecisionEnvelope: b}
	for _, c := range []*grpc.ClientConn{s.conn("builder", "gatekeeper"), s.connAsService("edge", "gatekeeper"), s.connAsService("publisher", "gatekeeper")} {
		if _, err := gatekeeperv1.NewGatekeeperServiceClient(c).RecordDeployment(ctx, req); status.Code(err) != codes.PermissionDenied {
			t.Errorf("gatekeeper RecordDeployment by a non-deployer: %v, want PermissionDenied", err)
		}
	}
	direct := &catalogv1.RecordDeploymentRequest{Name: "svc", Version: "2.0.0", Digest: digest, Environment: "prod",
		DecisionId: "00", DecisionEnvelopeSha256: strings.Repeat("0", 64), ReportedBy: "spiffe://" + s.info.TrustDomain + "/deployer/pipeline"}
	for _, c := range []*grpc.ClientConn{s.conn("deployer", "catalog"), s.conn("admin", "catalog"), s.connAsService("publisher", "catalog")} {
		if _, err := catalogv1.NewCatalogServiceClient(c).RecordDeployment(ctx, direct); status.Code(err) != codes.PermissionDenied {
			t.Errorf("catalog RecordDeployment bypassing the gatekeeper: %v, want PermissionDenied", err)
		}
	}

	cat := catalogv1.NewCatalogServiceClient(s.conn("auditor", "catalog"))
	for env, want := range map[string]string{"staging": "svc@1.0.0", "dev": "svc@1.0.0", "prod": ""} {
		resp, err := cat.SearchArtifacts(ctx, &catalogv1.SearchArtifactsRequest{DeployedEnvironment: env})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range resp.GetArtifacts() {
			got = append(got, a.GetArtifact().GetName()+"@"+a.GetArtifact().GetVersion())
		}
		if strings.Join(got, ",") != want {
			t.Errorf("search deployed_environment=%s: %v, want %q", env, got, want)
		}
	}
	lin, err := cat.GetLineage(ctx, &catalogv1.GetLineageRequest{Node: digest, Direction: catalogv1.LineageDirection_LINEAGE_DIRECTION_DOWN})
	if err != nil {
		t.Fatal(err)
	}
	var envs []string
	for _, dep := range lin.GetDeployments() {
		envs = append(envs, dep.GetEnvironment())
	}
	if strings.Join(envs, ",") != "staging,dev" {
		t.Errorf("lineage deployments of svc@1.0.0: %v, want staging then dev", envs)
	}
}
