package server_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

// prodNeedsApprovals is an Approvals where channel prod needs a quorum that
// never comes.
type prodNeedsApprovals struct{}

func (prodNeedsApprovals) Await(ctx context.Context, s server.ApprovalSubject) error {
	if s.Channel != "prod" {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}
func (prodNeedsApprovals) Signed(context.Context, server.ApprovalSubject, string) error { return nil }
func (prodNeedsApprovals) Protected(channel string) bool                                { return channel == "prod" }
func (prodNeedsApprovals) Rejection(server.ApprovalSubject) error                       { return nil }

func TestSignArtifacts(t *testing.T) {
	f := startWith(t, prodNeedsApprovals{})
	store := f.store

	prod, err := attest.NewProvenance(attest.Artifact{Name: "app", Version: "1.0.0", Digest: digest, Channel: "prod", BuilderID: "spiffe://custody.test/builder/ci"})
	if err != nil {
		t.Fatal(err)
	}
	items := []*signerv1.SignArtifactRequest{
		{Channel: "staging", Statement: provenance(t)},
		{Channel: "prod", Statement: prod},
		{Channel: "staging", Statement: []byte("{not json")},
		{Channel: "dev", Statement: provenance(t)}, // channel differs from the statement's
		{Channel: "staging", Statement: provenance(t)},
	}
	want := []codes.Code{codes.OK, codes.FailedPrecondition, codes.InvalidArgument, codes.InvalidArgument, codes.OK}
	resp, err := f.client(t, "/service/publisher").SignArtifacts(t.Context(), &signerv1.SignArtifactsRequest{Items: items})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResults()) != len(items) {
		t.Fatalf("%d results for %d items", len(resp.GetResults()), len(items))
	}
	pub, _ := store.Versions(t.Context(), "artifact")
	pk, alg, _ := attest.ParsePublicKey(pub[0].PublicDER)
	key := attest.Key{ID: pub[0].ID, Purpose: attest.PurposeArtifact, Algorithm: alg, Public: pk}
	for i, r := range resp.GetResults() {
		if codes.Code(r.GetCode()) != want[i] {
			t.Errorf("item %d: code %v (%s), want %v", i, codes.Code(r.GetCode()), r.GetMessage(), want[i])
			continue
		}
		if want[i] != codes.OK {
			if len(r.GetEnvelope()) != 0 {
				t.Errorf("item %d refused but carries an envelope", i)
			}
			continue
		}
		env, err := attest.ParseEnvelope(r.GetEnvelope())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.Verify([]attest.Key{key}, attest.PurposeArtifact); err != nil || string(env.Payload) != string(items[i].GetStatement()) {
			t.Errorf("item %d: envelope does not verify over its statement: %v", i, err)
		}
	}

	tooMany := make([]*signerv1.SignArtifactRequest, server.MaxSignBatch+1)
	for i := range tooMany {
		tooMany[i] = items[0]
	}
	if _, err := f.client(t, "/service/publisher").SignArtifacts(t.Context(), &signerv1.SignArtifactsRequest{Items: tooMany}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("%d items: %v, want InvalidArgument", len(tooMany), err)
	}
	for _, as := range []string{"/builder/ci", "/service/gatekeeper", "/admin/ops"} {
		if _, err := f.client(t, as).SignArtifacts(t.Context(), &signerv1.SignArtifactsRequest{Items: items[:1]}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v, want PermissionDenied", as, err)
		}
	}
}
