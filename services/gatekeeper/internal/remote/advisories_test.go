package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/libs/verify"
	"github.com/custody-dev/custody/services/gatekeeper/internal/admission"
)

// advisoryClient names ids as findings and serves doc(id) for each.
type advisoryClient struct {
	catalogv1.CatalogServiceClient
	ids    []string
	doc    func(id string) []byte
	served int
}

func (c *advisoryClient) ListFindings(context.Context, *catalogv1.ListFindingsRequest, ...grpc.CallOption) (*catalogv1.ListFindingsResponse, error) {
	resp := &catalogv1.ListFindingsResponse{}
	for _, id := range c.ids {
		resp.Findings = append(resp.Findings, &catalogv1.Finding{AdvisoryId: id, Severity: "LOW"})
	}
	return resp, nil
}

func (c *advisoryClient) GetAdvisory(_ context.Context, req *catalogv1.GetAdvisoryRequest, _ ...grpc.CallOption) (*catalogv1.GetAdvisoryResponse, error) {
	d := c.doc(req.GetId())
	if d == nil {
		return nil, status.Error(codes.NotFound, "no such advisory")
	}
	c.served++
	return &catalogv1.GetAdvisoryResponse{Document: d}, nil
}

// osv is an advisory of npm package x before 2.0.0, padded with details.
func osv(id string, pad int) []byte {
	b, _ := json.Marshal(map[string]any{"id": id, "modified": "2026-01-01T00:00:00Z", "details": strings.Repeat("a", pad),
		"affected": []any{map[string]any{"package": map[string]any{"ecosystem": "npm", "name": "x"},
			"ranges": []any{map[string]any{"type": "SEMVER", "events": []any{map[string]any{"introduced": "0"}, map[string]any{"fixed": "2.0.0"}}}}}},
		"severity": []any{map[string]any{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}}})
	return b
}

// TestAdvisoriesBounds: the matches come from the documents (a finding
// stated LOW is the document's CRITICAL); more than MaxAdvisories
// candidates, or more than MaxAdvisoryBytes of documents, is
// ErrIncomplete before the rest are read; a document served for another
// id is an error.
func TestAdvisoriesBounds(t *testing.T) {
	a := verify.Artifact{Name: "app", Version: "1.0.0"}
	comps := []sbom.Component{{PURL: "pkg:npm/x@1.0.0", Name: "x", Version: "1.0.0"}}
	c := &advisoryClient{ids: []string{"GHSA-aaaa-0000-0001", "GHSA-aaaa-0000-0001"}, doc: func(id string) []byte { return osv(id, 0) }}
	ms, err := NewCatalog(c).Advisories(t.Context(), a, comps)
	if err != nil || len(ms) != 1 || ms[0].Severity != "CRITICAL" || c.served != 1 {
		t.Fatalf("one advisory listed twice: %+v, %v, %d served; want one CRITICAL match read once", ms, err, c.served)
	}

	many := make([]string, MaxAdvisories+1)
	for i := range many {
		many[i] = fmt.Sprintf("GHSA-many-%04d", i)
	}
	c = &advisoryClient{ids: many, doc: func(id string) []byte { return osv(id, 0) }}
	if _, err := NewCatalog(c).Advisories(t.Context(), a, comps); !errors.Is(err, admission.ErrIncomplete) || c.served != 0 {
		t.Errorf("%d candidates: %v, %d served; want ErrIncomplete before any is read", len(many), err, c.served)
	}

	// Documents of 1,900 KiB: the 35th crosses 64 MiB and is the last read.
	c = &advisoryClient{ids: many[:40], doc: func(id string) []byte { return osv(id, 1900<<10) }}
	if _, err := NewCatalog(c).Advisories(t.Context(), a, comps); !errors.Is(err, admission.ErrIncomplete) || c.served != MaxAdvisoryBytes/(1900<<10)+1 {
		t.Errorf("40 documents of 1,900 KiB: %v, %d served; want ErrIncomplete at the byte bound", err, c.served)
	}

	c = &advisoryClient{ids: []string{"GHSA-aaaa-0000-0001"}, doc: func(string) []byte { return osv("GHSA-bbbb-0000-0001", 0) }}
	if _, err := NewCatalog(c).Advisories(t.Context(), a, comps); err == nil || errors.Is(err, admission.ErrIncomplete) {
		t.Errorf("another id's document: %v, want an error that is not ErrIncomplete", err)
	}
}
