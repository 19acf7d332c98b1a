package server_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/digest"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	publisherv1 "github.com/custody-dev/custody/libs/gen/custody/publisher/v1"
	"github.com/custody-dev/custody/libs/sbom"
)

// RecordSBOM keeps the request; the real catalog's checks (builder,
// statement, parsing) are tested in the catalog.
func (f *fakeCatalog) RecordSBOM(_ context.Context, req *catalogv1.RecordSBOMRequest) (*catalogv1.RecordSBOMResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sboms = append(f.sboms, req)
	return &catalogv1.RecordSBOMResponse{Created: true, Entry: &catalogv1.LogEntry{Index: 100 + int64(len(f.sboms))},
		Sbom: &catalogv1.SBOM{Name: req.GetName(), Version: req.GetVersion(), Format: sbom.FormatCycloneDX, DocumentDigest: digest.Of(req.GetDocument()),
			Envelope: req.GetEnvelope(), Components: []*catalogv1.Component{{Name: "yaml"}}}}, nil
}

func (f *fakeCatalog) recordedSBOMs() []*catalogv1.RecordSBOMRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*catalogv1.RecordSBOMRequest(nil), f.sboms...)
}

func (f *fakeSigner) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.statements)
}

const cdxDoc = `{"bomFormat":"CycloneDX","specVersion":"1.6","components":[{"type":"library","name":"yaml","version":"v3.0.1","purl":"pkg:golang/gopkg.in/yaml.v3@v3.0.1"}]}`

// uploadWithSBOM sends the header, the data in one chunk, then doc in
// sbomChunk-byte chunks.
func uploadWithSBOM(ctx context.Context, c publisherv1.PublisherServiceClient, h *publisherv1.UploadHeader, data, doc []byte, sbomChunk int) (*publisherv1.UploadResponse, error) {
	stream, err := c.Upload(ctx)
	if err != nil {
		return nil, err
	}
	msgs := []*publisherv1.UploadRequest{{Msg: &publisherv1.UploadRequest_Header{Header: h}}, {Msg: &publisherv1.UploadRequest_Chunk{Chunk: data}}}
	for len(doc) > 0 {
		n := min(sbomChunk, len(doc))
		msgs = append(msgs, &publisherv1.UploadRequest{Msg: &publisherv1.UploadRequest_SbomChunk{SbomChunk: doc[:n]}})
		doc = doc[n:]
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break
		}
	}
	return stream.CloseAndRecv()
}

func attachSBOM(ctx context.Context, c publisherv1.PublisherServiceClient, name, version string, size int64, doc []byte) (*publisherv1.AttachSBOMResponse, error) {
	stream, err := c.AttachSBOM(ctx)
	if err != nil {
		return nil, err
	}
	msgs := []*publisherv1.AttachSBOMRequest{{Msg: &publisherv1.AttachSBOMRequest_Header{Header: &publisherv1.AttachSBOMHeader{Name: name, Version: version, Size: size}}}}
	for len(doc) > 0 {
		n := min(1<<20, len(doc))
		msgs = append(msgs, &publisherv1.AttachSBOMRequest{Msg: &publisherv1.AttachSBOMRequest_Chunk{Chunk: doc[:n]}})
		doc = doc[n:]
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break
		}
	}
	return stream.CloseAndRecv()
}

// checkSBOMStatement: the last statement signed is an SBOM statement about
// the artifact's digest and doc.
func checkSBOMStatement(t *testing.T, f *fixture, artifactDigest string, doc []byte) {
	t.Helper()
	f.signer.mu.Lock()
	last := f.signer.statements[len(f.signer.statements)-1]
	f.signer.mu.Unlock()
	st, err := attest.ParseStatement(last)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := st.SBOM()
	if err != nil {
		t.Fatalf("the last statement signed is no SBOM statement: %v", err)
	}
	if ref.ArtifactName != "app" || ref.ArtifactDigest != artifactDigest || ref.Format != attest.SBOMFormatCycloneDX || !ref.Describes(doc) {
		t.Errorf("SBOM statement %+v: want app's digest %s and the document", ref, artifactDigest)
	}
}

// TestUploadWithSBOM: an upload that carries an SBOM after its bytes, in
// any chunking and resumable or not, publishes the artifact, then has an
// SBOM statement about its digest signed and recorded for its builder.
func TestUploadWithSBOM(t *testing.T) {
	f := start(t)
	c := f.client(t, "/builder/ci")
	doc := []byte(cdxDoc)
	for i, tc := range []struct {
		uploadID string
		chunk    int
	}{{"", 1 << 20}, {"", 7}, {"0123456789abcdef-sbom", 1 << 20}} {
		version := []string{"1.0.0", "1.0.1", "1.0.2"}[i]
		h := header(version, 0)
		h.SbomSize, h.UploadId = int64(len(doc)), tc.uploadID
		data := []byte("artifact bytes " + version)
		resp, err := uploadWithSBOM(t.Context(), c, h, data, doc, tc.chunk)
		if err != nil {
			t.Fatalf("%s: %v", version, err)
		}
		if resp.GetDigest() != digest.Of(data) || resp.GetSbom().GetDocumentDigest() != digest.Of(doc) || !resp.GetSbom().GetCreated() ||
			resp.GetSbom().GetFormat() != sbom.FormatCycloneDX || len(resp.GetSbom().GetEnvelope()) == 0 {
			t.Errorf("%s: response %v", version, resp)
		}
		checkSBOMStatement(t, f, digest.Of(data), doc)
		got := f.catalog.recordedSBOMs()
		last := got[len(got)-1]
		if last.GetName() != "app" || last.GetVersion() != version || !bytes.Equal(last.GetDocument(), doc) ||
			last.GetAttachedBy() != "spiffe://custody.test/builder/ci" || !bytes.Equal(last.GetEnvelope(), resp.GetSbom().GetEnvelope()) {
			t.Errorf("%s: recorded %v", version, last)
		}
	}
}

// TestUploadWithBadSBOM: a malformed, unsupported, bomb-like, oversized
// or misdeclared SBOM refuses the upload with InvalidArgument before the
// artifact is bound, signed or recorded.
func TestUploadWithBadSBOM(t *testing.T) {
	f := start(t)
	c := f.client(t, "/builder/ci")
	deep := `{"bomFormat":"CycloneDX","specVersion":"1.6","x":` + strings.Repeat("[", sbom.MaxJSONDepth+1) + strings.Repeat("]", sbom.MaxJSONDepth+1) + `}`
	for name, tc := range map[string]struct {
		doc  string
		size int64
	}{
		"malformed":      {`{"bomFormat":"CycloneDX","specVersion":"1.6","components":{}}`, 0},
		"not an SBOM":    {`{"name":"x"}`, 0},
		"CycloneDX 1.4":  {`{"bomFormat":"CycloneDX","specVersion":"1.4"}`, 0},
		"too deep":       {deep, 0},
		"shorter":        {cdxDoc, int64(len(cdxDoc)) + 1},
		"longer":         {cdxDoc, int64(len(cdxDoc)) - 1},
		"over 8 MiB":     {cdxDoc, sbom.MaxBytes + 1},
		"negative size":  {cdxDoc, -1},
		"no sbom_size":   {cdxDoc, -2},
		"size, no bytes": {"", 10},
	} {
		h := header("1.0.0", 0)
		switch tc.size {
		case 0:
			h.SbomSize = int64(len(tc.doc))
		case -2:
		default:
			h.SbomSize = tc.size
		}
		_, err := uploadWithSBOM(t.Context(), c, h, []byte("artifact bytes"), []byte(tc.doc), 1<<20)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if n := f.signer.count(); n != 0 {
		t.Errorf("%d statements signed for refused uploads", n)
	}
	if _, err := f.catalog.GetArtifact(t.Context(), &catalogv1.GetArtifactRequest{Name: "app", Version: "1.0.0"}); status.Code(err) != codes.NotFound {
		t.Errorf("app@1.0.0 recorded after refused uploads: %v", err)
	}
	// Not bound either: other bytes under the same version are accepted.
	if _, err := upload(t.Context(), c, header("1.0.0", 0), strings.NewReader("other bytes"), 1<<20); err != nil {
		t.Errorf("upload after refused SBOM uploads: %v", err)
	}
}

// TestAttachSBOMLater: the builder that published an artifact attaches an
// SBOM to it later; another builder and an edge are PermissionDenied and
// nothing is signed for them; an unpublished artifact is NotFound; a bad
// document is InvalidArgument.
func TestAttachSBOMLater(t *testing.T) {
	f := start(t)
	ci := f.client(t, "/builder/ci")
	if _, err := upload(t.Context(), ci, header("1.0.0", 0), strings.NewReader("artifact bytes"), 1<<20); err != nil {
		t.Fatal(err)
	}
	doc := []byte(cdxDoc)
	signed := f.signer.count()
	for _, as := range []string{"/builder/other", "/edge/dev", "/deployer/prod", "/admin/ops"} {
		if _, err := attachSBOM(t.Context(), f.client(t, as), "app", "1.0.0", int64(len(doc)), doc); status.Code(err) != codes.PermissionDenied {
			t.Errorf("AttachSBOM by %s: %v, want PermissionDenied", as, err)
		}
	}
	if n := f.signer.count(); n != signed {
		t.Errorf("%d statements signed for hostile callers", n-signed)
	}
	if got := f.catalog.recordedSBOMs(); len(got) != 0 {
		t.Errorf("SBOMs recorded for hostile callers: %v", got)
	}
	if _, err := attachSBOM(t.Context(), ci, "app", "9.9.9", int64(len(doc)), doc); status.Code(err) != codes.NotFound {
		t.Errorf("AttachSBOM to an unpublished artifact: %v, want NotFound", err)
	}
	for name, d := range map[string][]byte{"malformed": []byte(`{"bomFormat":"CycloneDX"`), "spdx 2.2": []byte(`{"spdxVersion":"SPDX-2.2"}`)} {
		if _, err := attachSBOM(t.Context(), ci, "app", "1.0.0", int64(len(d)), d); status.Code(err) != codes.InvalidArgument {
			t.Errorf("AttachSBOM %s: %v, want InvalidArgument", name, err)
		}
	}
	if _, err := attachSBOM(t.Context(), ci, "app", "1.0.0", sbom.MaxBytes+1, doc); status.Code(err) != codes.InvalidArgument {
		t.Errorf("AttachSBOM over 8 MiB declared: %v, want InvalidArgument", err)
	}
	resp, err := attachSBOM(t.Context(), ci, "app", "1.0.0", int64(len(doc)), doc)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetSbom().GetDocumentDigest() != digest.Of(doc) || !resp.GetSbom().GetCreated() {
		t.Errorf("AttachSBOM: %v", resp)
	}
	checkSBOMStatement(t, f, digest.Of([]byte("artifact bytes")), doc)
	if got := f.catalog.recordedSBOMs(); len(got) != 1 || got[0].GetAttachedBy() != "spiffe://custody.test/builder/ci" {
		t.Errorf("recorded %v", got)
	}
}
