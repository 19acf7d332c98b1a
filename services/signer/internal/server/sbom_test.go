package server_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
)

func sbomStatement(t *testing.T) []byte {
	b, err := attest.SBOMStatement(attest.SBOMRef{ArtifactName: "app", ArtifactDigest: digest, Format: attest.SBOMFormatCycloneDX,
		DocumentDigest: "sha256:" + strings.Repeat("2", 64)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSignSBOMStatement: an SBOM statement is signed with the artifact key
// of the channel named, on a channel that needs approvals too, without
// waiting for any, singly and in a batch; the envelope verifies as an
// artifact-purpose envelope over that statement. Only the publisher may
// ask.
func TestSignSBOMStatement(t *testing.T) {
	f := startWith(t, prodNeedsApprovals{})
	keys := publicKeys(t, f.client(t, "/auditor/audit"))
	pub := f.client(t, "/service/publisher")
	st := sbomStatement(t)
	resp, err := pub.SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "prod", Statement: st})
	if err != nil {
		t.Fatalf("SignArtifact of an SBOM statement on prod: %v", err)
	}
	env, err := attest.ParseEnvelope(resp.GetEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	if id, err := env.Verify(keys, attest.PurposeArtifact); err != nil || id != resp.GetKeyId() {
		t.Fatalf("SBOM envelope: %q, %v", id, err)
	}
	got, err := attest.ParseStatement(env.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := got.Artifact(); err == nil {
		t.Error("the SBOM statement reads as provenance")
	}
	if ref, err := got.SBOM(); err != nil || ref.ArtifactDigest != digest || ref.ArtifactName != "app" {
		t.Errorf("signed statement: %+v, %v", ref, err)
	}
	batch, err := pub.SignArtifacts(t.Context(), &signerv1.SignArtifactsRequest{Items: []*signerv1.SignArtifactRequest{{Channel: "prod", Statement: st}}})
	if err != nil || len(batch.GetResults()) != 1 || batch.GetResults()[0].GetCode() != int32(codes.OK) {
		t.Fatalf("SignArtifacts of an SBOM statement: %v, %v", batch, err)
	}

	for name, req := range map[string]*signerv1.SignArtifactRequest{
		"no channel":    {Statement: st},
		"bad channel":   {Channel: "prod\n", Statement: st},
		"bad predicate": {Channel: "prod", Statement: []byte(strings.Replace(string(st), `"format":"cyclonedx-json"`, `"format":"xml"`, 1))},
		"extra field":   {Channel: "prod", Statement: []byte(strings.Replace(string(st), `"format":`, `"extra":1,"format":`, 1))},
	} {
		if _, err := pub.SignArtifact(t.Context(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	for _, as := range []string{"/builder/ci", "/edge/dev", "/service/gatekeeper"} {
		if _, err := f.client(t, as).SignArtifact(t.Context(), &signerv1.SignArtifactRequest{Channel: "prod", Statement: st}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("SignArtifact of an SBOM statement by %s: %v, want PermissionDenied", as, err)
		}
	}
}
