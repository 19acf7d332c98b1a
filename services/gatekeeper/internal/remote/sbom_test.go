package remote

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/verify"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
)

// sbomClient answers GetSBOM and GetInclusionProof from fields.
type sbomClient struct {
	catalogv1.CatalogServiceClient
	resp  *catalogv1.GetSBOMResponse
	err   error
	asked *catalogv1.GetSBOMRequest
}

func (c *sbomClient) GetSBOM(_ context.Context, req *catalogv1.GetSBOMRequest, _ ...grpc.CallOption) (*catalogv1.GetSBOMResponse, error) {
	c.asked = req
	return c.resp, c.err
}

func (c *sbomClient) GetInclusionProof(context.Context, *catalogv1.GetInclusionProofRequest, ...grpc.CallOption) (*catalogv1.GetInclusionProofResponse, error) {
	return &catalogv1.GetInclusionProofResponse{Leaf: []byte(`{}`)}, nil
}

// TestSBOM: no SBOM is ErrNotFound; what the catalog serves is verified
// (the genuine and forged cases are libs/verify's table), so an answer
// that does not verify is a verification error, never components.
func TestSBOM(t *testing.T) {
	a := verify.Artifact{Name: "app", Version: "1.0.0", Digest: "sha256:1111111111111111111111111111111111111111111111111111111111111111", Channel: "staging", BuilderID: "spiffe://custody.test/builder/ci"}
	root := &trustroot.Root{Version: 1}
	c := &sbomClient{err: status.Error(codes.NotFound, "no SBOM")}
	if _, err := NewCatalog(c).SBOM(t.Context(), a, root, verify.Options{}); !errors.Is(err, admission.ErrNotFound) {
		t.Errorf("no SBOM: %v, want ErrNotFound", err)
	}
	if !c.asked.GetIncludeDocument() || c.asked.GetName() != "app" || c.asked.GetVersion() != "1.0.0" {
		t.Errorf("asked %v: want app@1.0.0 with its document", c.asked)
	}
	c = &sbomClient{resp: &catalogv1.GetSBOMResponse{Sbom: &catalogv1.SBOM{Envelope: []byte(`{}`), Document: []byte(`{}`),
		Components: []*catalogv1.Component{{Name: "x"}}}}}
	v, err := NewCatalog(c).SBOM(t.Context(), a, root, verify.Options{})
	if !errors.Is(err, verify.ErrVerification) || v == nil || v.Components != nil || string(v.Envelope) != `{}` {
		t.Errorf("an unverifiable SBOM: %+v, %v; want a verification error, no components and the envelope that failed", v, err)
	}
	c.err = status.Error(codes.Unavailable, "down")
	if _, err := NewCatalog(c).SBOM(t.Context(), a, root, verify.Options{}); err == nil || errors.Is(err, admission.ErrNotFound) {
		t.Errorf("catalog down: %v, want an error that is not NotFound", err)
	}
}
