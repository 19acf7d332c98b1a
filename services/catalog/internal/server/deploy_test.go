package server_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/tlog"
)

func deployReq(name, version, content, env string) *catalogv1.RecordDeploymentRequest {
	return &catalogv1.RecordDeploymentRequest{
		Name: name, Version: version, Digest: digestOf(content), Environment: env,
		DecisionId: "0123456789abcdef0123456789abcdef", DecisionEnvelopeSha256: strings.Repeat("ab", 32),
		ReportedBy: "spiffe://custody.test/deployer/" + env,
	}
}

// TestRecordDeployment: the gatekeeper's report is logged as a
// deployment.recorded entry by the gatekeeper, about the artifact's digest,
// naming the deployer and decision, and the stored deployment is what
// search by environment and the lineage walk down report.
func TestRecordDeployment(t *testing.T) {
	e := newEnv(t)
	if _, err := e.client(t, "/service/publisher").RecordArtifact(t.Context(), recordReq("app", "1.0.0", "a1")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client(t, "/service/publisher").RecordArtifact(t.Context(), recordReq("app", "2.0.0", "a2")); err != nil {
		t.Fatal(err)
	}
	gk := e.client(t, "/service/gatekeeper")
	resp, err := gk.RecordDeployment(t.Context(), deployReq("app", "1.0.0", "a1", "prod"))
	if err != nil {
		t.Fatal(err)
	}
	le, err := tlog.ParseEntry(resp.GetEntry().GetLeaf())
	if err != nil {
		t.Fatal(err)
	}
	if le.Type != tlog.TypeDeploymentRecorded || le.Actor != "spiffe://custody.test/service/gatekeeper" || le.Subject.Digest != digestOf("a1") {
		t.Errorf("entry %+v: want a deployment.recorded by the gatekeeper about app@1.0.0's digest", le)
	}
	var details map[string]string
	if err := json.Unmarshal(le.Details, &details); err != nil {
		t.Fatal(err)
	}
	if details["reported_by"] != "spiffe://custody.test/deployer/prod" || details["environment"] != "prod" ||
		details["decision_id"] != "0123456789abcdef0123456789abcdef" || details["name"] != "app" || details["version"] != "1.0.0" {
		t.Errorf("details %v", details)
	}
	if d := resp.GetDeployment(); d.GetEnvironment() != "prod" || d.GetDigest() != digestOf("a1") || d.GetDeployedAt() == nil {
		t.Errorf("deployment %v", d)
	}

	reader := e.client(t, "/auditor/audit")
	sr, err := reader.SearchArtifacts(t.Context(), &catalogv1.SearchArtifactsRequest{DeployedEnvironment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if len(sr.GetArtifacts()) != 1 || sr.GetArtifacts()[0].GetArtifact().GetVersion() != "1.0.0" {
		t.Errorf("search deployed_environment=prod: %v, want app@1.0.0 only", sr.GetArtifacts())
	}
	if sr, err := reader.SearchArtifacts(t.Context(), &catalogv1.SearchArtifactsRequest{DeployedEnvironment: "staging"}); err != nil || len(sr.GetArtifacts()) != 0 {
		t.Errorf("search deployed_environment=staging: %v, %v; want none", sr, err)
	}
	lin, err := reader.GetLineage(t.Context(), &catalogv1.GetLineageRequest{Node: digestOf("a1"), Direction: catalogv1.LineageDirection_LINEAGE_DIRECTION_DOWN})
	if err != nil {
		t.Fatal(err)
	}
	if len(lin.GetDeployments()) != 1 || lin.GetDeployments()[0].GetEnvironment() != "prod" {
		t.Errorf("lineage down deployments: %v", lin.GetDeployments())
	}
	// The entry is sequenced; ListEvents serves it once a co-signed
	// checkpoint covers it, which the background finisher stores.
	var types []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ev, err := reader.ListEvents(t.Context(), &catalogv1.ListEventsRequest{SubjectDigest: digestOf("a1")})
		if err != nil {
			t.Fatal(err)
		}
		types = types[:0]
		for _, en := range ev.GetEntries() {
			if p, err := tlog.ParseEntry(en.GetLeaf()); err == nil {
				types = append(types, p.Type)
			}
		}
		if len(types) == 2 {
			break
		}
	}
	if strings.Join(types, ",") != "artifact.published,deployment.recorded" {
		t.Errorf("events about the digest: %v", types)
	}
}

// TestRecordDeploymentRefuses: only the gatekeeper may record (the RPC
// policy, then the event table); malformed or mismatched reports are
// refused; AppendEvent cannot log a deployment.recorded without its row.
// Nothing refused reaches the log.
func TestRecordDeploymentRefuses(t *testing.T) {
	e := newEnv(t)
	if _, err := e.client(t, "/service/publisher").RecordArtifact(t.Context(), recordReq("app", "1.0.0", "a1")); err != nil {
		t.Fatal(err)
	}
	before := logSize(t, e, e.client(t, "/auditor/audit"))
	for _, p := range callers {
		if p == "/service/gatekeeper" {
			continue
		}
		_, err := e.client(t, p).RecordDeployment(t.Context(), deployReq("app", "1.0.0", "a1", "prod"))
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("RecordDeployment by %s: %v, want PermissionDenied", p, err)
		}
	}
	gk := e.client(t, "/service/gatekeeper")
	mod := func(f func(r *catalogv1.RecordDeploymentRequest)) *catalogv1.RecordDeploymentRequest {
		r := deployReq("app", "1.0.0", "a1", "prod")
		f(r)
		return r
	}
	for _, tc := range []struct {
		name string
		req  *catalogv1.RecordDeploymentRequest
		code codes.Code
	}{
		{"another artifact's digest", mod(func(r *catalogv1.RecordDeploymentRequest) { r.Digest = digestOf("other") }), codes.InvalidArgument},
		{"unknown artifact", deployReq("app", "9.9.9", "a1", "prod"), codes.NotFound},
		{"no digest", mod(func(r *catalogv1.RecordDeploymentRequest) { r.Digest = "" }), codes.InvalidArgument},
		{"bad environment", mod(func(r *catalogv1.RecordDeploymentRequest) { r.Environment = "Prod\n" }), codes.InvalidArgument},
		{"long environment", mod(func(r *catalogv1.RecordDeploymentRequest) { r.Environment = strings.Repeat("p", 65) }), codes.InvalidArgument},
		{"no decision", mod(func(r *catalogv1.RecordDeploymentRequest) { r.DecisionId = "" }), codes.InvalidArgument},
		{"bad decision id", mod(func(r *catalogv1.RecordDeploymentRequest) { r.DecisionId = "zz\"}" }), codes.InvalidArgument},
		{"bad envelope hash", mod(func(r *catalogv1.RecordDeploymentRequest) { r.DecisionEnvelopeSha256 = "ab" }), codes.InvalidArgument},
		{"bad reporter", mod(func(r *catalogv1.RecordDeploymentRequest) { r.ReportedBy = "deployer" }), codes.InvalidArgument},
		{"bad name", mod(func(r *catalogv1.RecordDeploymentRequest) { r.Name = "../x" }), codes.InvalidArgument},
	} {
		_, err := gk.RecordDeployment(t.Context(), tc.req)
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
	_, err := gk.AppendEvent(t.Context(), &catalogv1.AppendEventRequest{Type: tlog.TypeDeploymentRecorded, SubjectDigest: digestOf("a1"),
		Details: []byte(`{}`), Wait: catalogv1.AppendWait_APPEND_WAIT_SEQUENCED})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "RecordDeployment") {
		t.Errorf("AppendEvent deployment.recorded: %v, want InvalidArgument naming RecordDeployment", err)
	}
	if after := logSize(t, e, e.client(t, "/auditor/audit")); after != before {
		t.Errorf("log grew from %d to %d entries on refused calls", before, after)
	}
}
