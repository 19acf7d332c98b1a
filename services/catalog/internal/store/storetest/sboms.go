package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/libs/sbom"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

func sbomRow(artifactID int64, doc string, components int) *catalog.SBOM {
	b := &catalog.SBOM{
		ArtifactID: artifactID, Format: sbom.FormatCycloneDX, DocumentDigest: "sha256:doc-" + doc, Document: []byte(doc),
		Envelope: []byte(`{"sbom":"` + doc + `"}`), KeyID: keyA, AttachedBy: "spiffe://t/builder/ci",
		AttachedAt: time.Date(2025, 3, 4, 5, 6, 7, 8000, time.UTC), LogIndex: 99,
	}
	for i := range components {
		b.Components = append(b.Components, sbom.Component{PURL: fmt.Sprintf("pkg:golang/example.com/m%d@v1.%d.0", i, i),
			Name: fmt.Sprintf("m%d", i), Version: fmt.Sprintf("v1.%d.0", i), License: "MIT OR Apache-2.0"})
	}
	// A component with only a name: empty purl, version and licence are
	// kept as empty, not lost.
	b.Components = append(b.Components, sbom.Component{Name: "bare"})
	return b
}

// sboms: one SBOM per artifact, read back with its components in order,
// with or without its document, by artifact and by digest (logged
// artifacts only, the oldest SBOM first).
func sboms(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	rec := record("1.0.0", d1)
	id := logged(t, s, rec, 0)
	if _, err := s.SBOM(ctx, id, false); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("SBOM before one is attached: %v, want ErrNotFound", err)
	}
	if _, err := s.SBOMByDigest(ctx, d1, false); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("SBOMByDigest before one is attached: %v, want ErrNotFound", err)
	}
	if has, err := s.HasSBOM(ctx, id); err != nil || has {
		t.Errorf("HasSBOM before one is attached: %v, %v; want false", has, err)
	}
	want := sbomRow(id, "doc one", 300)
	sid, err := s.InsertSBOM(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	want.ID = sid
	want.Artifact = rec.Artifact
	got, err := s.SBOM(ctx, id, true)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SBOM with document (-want +got):\n%s", diff)
	}
	if has, err := s.HasSBOM(ctx, id); err != nil || !has {
		t.Errorf("HasSBOM once attached: %v, %v; want true", has, err)
	}
	if has, err := s.HasSBOM(ctx, id+1000); err != nil || has {
		t.Errorf("HasSBOM of a missing artifact: %v, %v; want false", has, err)
	}
	noDoc := *want
	noDoc.Document = nil
	if got, err := s.SBOM(ctx, id, false); err != nil || !cmp.Equal(&noDoc, got) {
		t.Errorf("SBOM without document: %v; diff %s", err, cmp.Diff(&noDoc, got))
	}
	if got, err := s.SBOMByDigest(ctx, d1, false); err != nil || !cmp.Equal(&noDoc, got) {
		t.Errorf("SBOMByDigest: %v; diff %s", err, cmp.Diff(&noDoc, got))
	}

	// A second SBOM for the same artifact is refused, and the first kept.
	if _, err := s.InsertSBOM(ctx, sbomRow(id, "doc two", 1)); !errors.Is(err, catalog.ErrAlreadyExists) {
		t.Errorf("second SBOM of one artifact: %v, want ErrAlreadyExists", err)
	}
	if got, err := s.SBOM(ctx, id, true); err != nil || string(got.Document) != "doc one" || len(got.Components) != 301 {
		t.Errorf("after a refused second SBOM: %v, %+v", err, got)
	}
	if _, err := s.InsertSBOM(ctx, sbomRow(id+1000, "doc", 1)); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("SBOM of a missing artifact: %v, want ErrNotFound", err)
	}

	// The same bytes as another name@version: by digest, the oldest SBOM.
	other := record("2.0.0", d1)
	oid := logged(t, s, other, 1)
	if _, err := s.InsertSBOM(ctx, sbomRow(oid, "doc other", 0)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.SBOMByDigest(ctx, d1, false); err != nil || got.ArtifactID != id {
		t.Errorf("SBOMByDigest with two: %+v, %v; want artifact %d's", got, err, id)
	}
	if got, err := s.SBOM(ctx, oid, false); err != nil || len(got.Components) != 1 || got.Artifact.Version != "2.0.0" {
		t.Errorf("SBOM of the second artifact: %+v, %v", got, err)
	}

	// A pending artifact's SBOM is not found by digest.
	pid, err := s.InsertArtifact(ctx, record("3.0.0", d2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.InsertSBOM(ctx, sbomRow(pid, "doc pending", 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SBOMByDigest(ctx, d2, false); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("SBOMByDigest of a pending artifact: %v, want ErrNotFound", err)
	}
}

// sbomOnce inserts SBOMs of one artifact from two stores over one
// database at once: exactly one is stored, the other is ErrAlreadyExists.
func sbomOnce(t *testing.T, open Opener) {
	a, b := open(t), open(t)
	id := logged(t, a, record("1.0.0", d1), 0)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []Store{a, b} {
		wg.Go(func() { _, errs[i] = s.InsertSBOM(t.Context(), sbomRow(id, fmt.Sprintf("doc %d", i), 50)) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, catalog.ErrAlreadyExists):
			t.Errorf("concurrent InsertSBOM: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of 2 concurrent SBOMs stored, want 1 (%v)", ok, errs)
	}
	got, err := b.SBOM(t.Context(), id, false)
	if err != nil || len(got.Components) != 51 {
		t.Errorf("stored SBOM: %+v, %v; want one SBOM with its 51 components", got, err)
	}
}
